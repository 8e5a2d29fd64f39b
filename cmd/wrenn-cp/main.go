// Command wrenn-cp is Wrenn's control plane: the REST API, the host registry
// and the background jobs, with all state in PostgreSQL.
//
// Usage:
//
//	wrenn-cp [serve]                 run the server (the default)
//	wrenn-cp migrate up|down|status  manage the database schema
//	wrenn-cp version                 print the version
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "wrenn-cp:", err)
		os.Exit(1)
	}
}

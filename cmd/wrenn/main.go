// Command wrenn is Wrenn's command-line client: it creates, lists, pauses,
// resumes and destroys capsules, runs commands and terminals in them,
// copies files in and out, and manages snapshots, through the REST API
// (package pkg/wrenn).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

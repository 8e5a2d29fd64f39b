// Command wrenn-agent is the Wrenn host agent: it registers a sandbox host
// with the control plane, heartbeats, and serves the RPC API the control
// plane drives the host with. See docs/agent.md.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "wrenn-agent: %v\n", err)
		os.Exit(1)
	}
}

// Command envd is Wrenn's guest agent: it runs inside every capsule (as its
// init, PID 1) and serves process, filesystem and file-transfer calls from the
// host agent. See docs/envd.md.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "envd:", err)
		os.Exit(1)
	}
}

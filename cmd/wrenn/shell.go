package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// shell opens an interactive terminal in a capsule: the local terminal in
// raw mode, its size followed, and the remote process's exit status as
// ours.
func (c *cli) shell(ctx context.Context, args []string) error {
	fs := c.flags("shell")
	cmd := fs.String("cmd", "", "shell line to run instead of the login shell")
	cwd := fs.String("cwd", "", "working directory")
	user := fs.String("user", "", "user to run as")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("shell: want one capsule id")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	opts := wrenn.TerminalOptions{Cmd: *cmd, Cwd: *cwd, User: *user}
	in, inTTY := c.stdinFile()
	inTTY = inTTY && isTerminal(in)
	if inTTY {
		opts.Cols, opts.Rows, _ = termSize(in)
	}
	// The terminal ends when its process does, not with our context: an
	// interrupt of ours is a Ctrl-C for the remote side (raw mode sends it
	// as input), and otherwise closing hangs the process up.
	termCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	term, err := cl.OpenTerminal(termCtx, fs.Arg(0), opts)
	if err != nil {
		return err
	}
	defer func() { _ = term.Close() }()
	if inTTY {
		restore, err := makeRaw(in)
		if err == nil {
			defer restore()
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for {
				select {
				case <-winch:
					if cols, rows, ok := termSize(in); ok {
						_ = term.Resize(termCtx, cols, rows)
					}
				case <-termCtx.Done():
					return
				}
			}
		}()
	}
	go func() {
		_, _ = io.Copy(term, c.stdin)
		if !inTTY {
			// Piped input ended: end the shell as a terminal's Ctrl-D would.
			_, _ = term.Write([]byte{4})
		}
	}()
	go func() {
		<-ctx.Done()
		if !inTTY {
			_ = term.Signal(termCtx, "SIGINT")
		}
	}()
	if _, err := io.Copy(c.stdout, term); err != nil {
		return err
	}
	exit, err := term.Wait()
	if err != nil {
		return err
	}
	return exitStatus(exit.ExitCode, exit.Signal)
}

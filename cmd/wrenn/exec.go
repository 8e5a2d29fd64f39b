package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// exec runs a command in a capsule, streaming its output, and exits with
// its exit status (128+n for a signal, as shells do).
func (c *cli) exec(ctx context.Context, args []string) error {
	fs := c.flags("exec")
	c.jsonFlag(fs)
	envs := kv{}
	fs.Var(envs, "env", "environment variable KEY=VALUE (repeatable)")
	cwd := fs.String("cwd", "", "working directory")
	user := fs.String("user", "", "user to run as")
	tag := fs.String("tag", "", "name the process (to attach to it later)")
	timeout := fs.Int("timeout", 0, "kill the command after this many seconds")
	interactive := fs.Bool("i", false, "send this program's stdin to the command")
	background := fs.Bool("d", false, "start in the background and print its pid")
	if err := parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return usageError("exec: want a capsule id and a command: wrenn exec <id> -- cmd [args]")
	}
	id, argv := rest[0], rest[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError("exec: no command after --")
	}
	// One word is a shell line (quoted by the user: 'ls | wc -l'); more
	// are a program and its arguments, run without a shell.
	cmd := wrenn.Command{Cmd: argv[0], Envs: envs, Cwd: *cwd, User: *user, Tag: *tag, TimeoutSec: *timeout}
	if len(argv) > 1 {
		cmd.Args = argv[1:]
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	if *background {
		bg, err := cl.ExecBackground(ctx, id, cmd)
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(bg)
		}
		fmt.Fprintln(c.stdout, bg.PID)
		return nil
	}
	if c.json {
		res, err := cl.Exec(ctx, id, cmd)
		if err != nil {
			return err
		}
		if err := c.printJSON(res); err != nil {
			return err
		}
		return exitStatus(res.ExitCode, res.Signal)
	}

	// The stream outlives an interrupt of ours: Ctrl-C is passed on to the
	// command as SIGINT and we wait for it to end.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var werr error
	write := func(w io.Writer) func([]byte) {
		return func(b []byte) {
			if _, err := w.Write(b); err != nil && werr == nil {
				werr = err
			}
		}
	}
	p, err := cl.Stream(streamCtx, id, cmd, wrenn.StreamHandlers{
		OnStdout: write(c.stdout), OnStderr: write(c.stderr),
		OnDropped: func(n uint64) { fmt.Fprintf(c.stderr, "wrenn: %d bytes of output were lost\n", n) },
	})
	if err != nil {
		return err
	}
	go func() {
		if *interactive {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.stdin.Read(buf)
				if n > 0 && p.SendStdin(streamCtx, buf[:n]) != nil {
					return
				}
				if err != nil {
					break
				}
			}
		}
		_ = p.CloseStdin(streamCtx)
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Signal(streamCtx, "SIGINT")
			// A command that ignores SIGINT gets SIGKILL after a while.
			select {
			case <-time.After(5 * time.Second):
				_ = p.Signal(streamCtx, "SIGKILL")
			case <-streamCtx.Done():
			}
		case <-streamCtx.Done():
		}
	}()
	exit, err := p.Wait()
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("writing output: %w", werr)
	}
	if exit.TimedOut {
		fmt.Fprintf(c.stderr, "wrenn: command timed out after %d s\n", *timeout)
	}
	return exitStatus(exit.ExitCode, exit.Signal)
}

// signalNumbers are the signals the API names, for 128+n exit statuses.
var signalNumbers = map[string]int{
	"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGKILL": 9, "SIGUSR1": 10, "SIGUSR2": 12,
	"SIGTERM": 15, "SIGCONT": 18, "SIGSTOP": 19, "SIGPIPE": 13, "SIGABRT": 6, "SIGSEGV": 11,
}

// exitStatus turns a command's exit into ours: nil for 0.
func exitStatus(code int, signal string) error {
	if signal != "" {
		n, ok := signalNumbers[signal]
		if !ok {
			n = 0
		}
		return &exitError{code: 128 + n}
	}
	if code == 0 {
		return nil
	}
	if code < 0 || code > 255 {
		return &exitError{code: 1, msg: "command exited with status " + strconv.Itoa(code)}
	}
	return &exitError{code: code}
}

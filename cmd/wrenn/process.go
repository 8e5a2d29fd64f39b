package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// ps lists a capsule's processes.
func (c *cli) ps(ctx context.Context, args []string) error {
	fs := c.flags("ps")
	c.jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("ps: want one capsule id")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	procs, err := cl.ListProcesses(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if c.json {
		if procs == nil {
			procs = []wrenn.ProcessInfo{}
		}
		return c.printJSON(procs)
	}
	rows := make([][]string, 0, len(procs))
	for _, p := range procs {
		tag, state := "", "running"
		if p.Tag != nil {
			tag = *p.Tag
		}
		switch {
		case p.Running:
		case p.Signal != nil:
			state = "killed by " + *p.Signal
		case p.ExitCode != nil:
			state = "exited " + strconv.Itoa(*p.ExitCode)
		default:
			state = "ended"
		}
		rows = append(rows, []string{strconv.FormatUint(uint64(p.PID), 10), tag, state,
			strings.TrimSpace(p.Cmd + " " + strings.Join(p.Args, " "))})
	}
	return c.table([]string{"PID", "TAG", "STATE", "COMMAND"}, rows)
}

// attach follows a process by pid or tag, from the start of its buffered
// output, and exits with its status.
func (c *cli) attach(ctx context.Context, args []string) error {
	fs := c.flags("attach")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError("attach: want a capsule id and a pid or tag")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var pid uint32
	tag := fs.Arg(1)
	if n, err := strconv.ParseUint(tag, 10, 32); err == nil {
		pid, tag = uint32(n), ""
	}
	p, err := cl.Attach(ctx, fs.Arg(0), pid, tag, wrenn.StreamHandlers{
		OnStdout:  func(b []byte) { _, _ = c.stdout.Write(b) },
		OnStderr:  func(b []byte) { _, _ = c.stderr.Write(b) },
		OnDropped: func(n uint64) { fmt.Fprintf(c.stderr, "wrenn: %d bytes of earlier output were not kept\n", n) },
	})
	if err != nil {
		return err
	}
	exit, err := p.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return nil // detached by Ctrl-C; the process goes on
		}
		return fmt.Errorf("attach: %w", err)
	}
	return exitStatus(exit.ExitCode, exit.Signal)
}

// kill sends a signal to a process.
func (c *cli) kill(ctx context.Context, args []string) error {
	fs := c.flags("kill")
	sig := fs.String("signal", "SIGKILL", "signal to send (SIGTERM, SIGINT, …)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError("kill: want a capsule id and a pid")
	}
	pid, err := strconv.ParseUint(fs.Arg(1), 10, 32)
	if err != nil {
		return usageError("kill: %q is not a pid", fs.Arg(1))
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	return cl.KillProcess(ctx, fs.Arg(0), uint32(pid), *sig)
}

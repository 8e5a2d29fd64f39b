package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

func (c *cli) snapshot(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("snapshot: want create, ls or rm")
	}
	switch args[0] {
	case "create":
		fs := c.flags("snapshot create")
		c.jsonFlag(fs)
		paused := fs.Bool("paused", false, "leave the capsule paused afterwards")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 2 {
			return usageError("snapshot create: want a capsule id and a name")
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		t, err := cl.CreateSnapshot(ctx, fs.Arg(0), fs.Arg(1), wrenn.SnapshotOptions{KeepPaused: *paused})
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(t)
		}
		fmt.Fprintln(c.stdout, t.Name)
		return nil
	case "ls", "list":
		return c.listTemplates(ctx, "snapshot ls", args[1:], true)
	case "rm", "delete":
		fs := c.flags("snapshot rm")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usageError("snapshot rm: want snapshot names")
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		for _, name := range fs.Args() {
			if err := cl.DeleteSnapshot(ctx, name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			fmt.Fprintln(c.stdout, name)
		}
		return nil
	}
	return usageError("snapshot: unknown command %q", args[0])
}

func (c *cli) template(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "ls" && args[0] != "list") {
		return usageError("template: want ls")
	}
	return c.listTemplates(ctx, "template ls", args[1:], false)
}

// listTemplates lists templates; onlySnapshots keeps the team's snapshots.
func (c *cli) listTemplates(ctx context.Context, name string, args []string, onlySnapshots bool) error {
	fs := c.flags(name)
	c.jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var ts []wrenn.Template
	if onlySnapshots {
		ts, err = cl.ListSnapshots(ctx)
	} else {
		ts, err = cl.ListTemplates(ctx)
	}
	if err != nil {
		return err
	}
	out := []wrenn.Template{}
	for _, t := range ts {
		if !onlySnapshots || t.Kind == "snapshot" {
			out = append(out, t)
		}
	}
	if c.json {
		return c.printJSON(out)
	}
	rows := make([][]string, 0, len(out))
	for _, t := range out {
		src := ""
		if t.SourceCapsuleID != nil {
			src = *t.SourceCapsuleID
		}
		rows = append(rows, []string{t.Name, t.Kind, strconv.Itoa(t.DefaultVCPUs), strconv.Itoa(t.DefaultMemoryMB) + " MiB",
			ago(t.CreatedAt), src})
	}
	return c.table([]string{"NAME", "KIND", "VCPUS", "MEMORY", "CREATED", "SOURCE CAPSULE"}, rows)
}

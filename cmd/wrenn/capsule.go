package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// jsonFlag lets --json follow the subcommand too.
func (c *cli) jsonFlag(fs *flag.FlagSet) { fs.BoolVar(&c.json, "json", c.json, "print JSON") }

func (c *cli) capsule(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("capsule: want create, ls, get, rm, pause or resume")
	}
	switch args[0] {
	case "create", "new":
		return c.capsuleCreate(ctx, args[1:])
	case "ls", "list":
		return c.capsuleList(ctx, args[1:])
	case "get", "show":
		return c.capsuleOne(ctx, "get", args[1:])
	case "pause":
		return c.capsuleOne(ctx, "pause", args[1:])
	case "resume":
		return c.capsuleOne(ctx, "resume", args[1:])
	case "rm", "destroy":
		return c.capsuleRemove(ctx, args[1:])
	}
	return usageError("capsule: unknown command %q", args[0])
}

func (c *cli) capsuleCreate(ctx context.Context, args []string) error {
	fs := c.flags("capsule create")
	c.jsonFlag(fs)
	spec := wrenn.CapsuleSpec{Envs: map[string]string{}, Metadata: map[string]string{}}
	fs.StringVar(&spec.Template, "template", "minimal", "template or snapshot to start from")
	fs.IntVar(&spec.VCPUs, "vcpus", 0, "vCPUs (default: the template's)")
	fs.IntVar(&spec.MemoryMB, "memory", 0, "memory in MiB (default: the template's)")
	fs.IntVar(&spec.DiskMB, "disk", 0, "disk in MiB (default: the template's)")
	timeout := fs.Int("timeout", -1, "idle seconds before it is paused (0: never; default 300)")
	fs.Var(kv(spec.Envs), "env", "environment variable KEY=VALUE (repeatable)")
	fs.Var(kv(spec.Metadata), "meta", "metadata KEY=VALUE (repeatable)")
	fs.BoolVar(&spec.NoWait, "no-wait", false, "answer as soon as it is starting")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("capsule create: unexpected argument %q", fs.Arg(0))
	}
	if *timeout >= 0 {
		spec.TimeoutSec = wrenn.Seconds(*timeout)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	capsule, err := cl.CreateCapsule(ctx, spec)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(capsule)
	}
	fmt.Fprintln(c.stdout, capsule.ID)
	return nil
}

func (c *cli) capsuleList(ctx context.Context, args []string) error {
	fs := c.flags("capsule ls")
	c.jsonFlag(fs)
	status := fs.String("status", "", "only these statuses, comma-separated (running,paused)")
	all := fs.Bool("all", false, "include stopped capsules")
	meta := kv{}
	fs.Var(meta, "meta", "only capsules with metadata KEY=VALUE (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	opts := wrenn.ListOptions{Metadata: meta, Limit: 1000}
	switch {
	case *status != "":
		opts.Statuses = strings.Split(*status, ",")
	case !*all:
		opts.Statuses = []string{wrenn.StatusPending, wrenn.StatusStarting, wrenn.StatusRunning, wrenn.StatusPausing,
			wrenn.StatusPaused, wrenn.StatusResuming, wrenn.StatusError, wrenn.StatusMissing}
	}
	capsules, err := cl.ListAllCapsules(ctx, opts)
	if err != nil {
		return err
	}
	if c.json {
		if capsules == nil {
			capsules = []wrenn.Capsule{}
		}
		return c.printJSON(capsules)
	}
	rows := make([][]string, 0, len(capsules))
	for _, cp := range capsules {
		rows = append(rows, []string{cp.ID, cp.Status, cp.Template, strconv.Itoa(cp.VCPUs),
			strconv.Itoa(cp.MemoryMB) + " MiB", ago(cp.CreatedAt)})
	}
	return c.table([]string{"ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY", "CREATED"}, rows)
}

func (c *cli) capsuleOne(ctx context.Context, op string, args []string) error {
	fs := c.flags("capsule " + op)
	c.jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("capsule %s: want one capsule id", op)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var capsule *wrenn.Capsule
	switch op {
	case "get":
		capsule, err = cl.GetCapsule(ctx, fs.Arg(0))
	case "pause":
		capsule, err = cl.PauseCapsule(ctx, fs.Arg(0))
	case "resume":
		capsule, err = cl.ResumeCapsule(ctx, fs.Arg(0))
	}
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(capsule)
	}
	if op != "get" {
		fmt.Fprintf(c.stdout, "%s %s\n", capsule.ID, capsule.Status)
		return nil
	}
	rows := [][]string{
		{"id", capsule.ID}, {"status", capsule.Status}, {"template", capsule.Template},
		{"vcpus", strconv.Itoa(capsule.VCPUs)}, {"memory", strconv.Itoa(capsule.MemoryMB) + " MiB"},
		{"disk", strconv.Itoa(capsule.DiskMB) + " MiB"}, {"timeout", strconv.Itoa(capsule.TimeoutSec) + " s"},
		{"created", capsule.CreatedAt.Format(time.RFC3339)}, {"last active", capsule.LastActiveAt.Format(time.RFC3339)},
	}
	if capsule.StatusReason != "" {
		rows = append(rows, []string{"reason", capsule.StatusReason})
	}
	if capsule.PausedAt != nil {
		rows = append(rows, []string{"paused", capsule.PausedAt.Format(time.RFC3339)})
	}
	for k, v := range capsule.Metadata {
		rows = append(rows, []string{"meta " + k, v})
	}
	return c.table([]string{"FIELD", "VALUE"}, rows)
}

func (c *cli) capsuleRemove(ctx context.Context, args []string) error {
	fs := c.flags("capsule rm")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError("capsule rm: want capsule ids")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range fs.Args() {
		if err := cl.DestroyCapsule(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", id, oneLine(err)))
			continue
		}
		fmt.Fprintln(c.stdout, id)
	}
	return errors.Join(errs...)
}

// ago renders how long ago t was, roughly.
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

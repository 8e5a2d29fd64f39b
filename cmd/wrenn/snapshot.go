package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"go.yaml.in/yaml/v3"

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
	if len(args) > 0 && args[0] == "build" {
		return c.templateBuild(ctx, args[1:])
	}
	if len(args) == 0 || (args[0] != "ls" && args[0] != "list") {
		return usageError("template: want ls or build")
	}
	return c.listTemplates(ctx, "template ls", args[1:], false)
}

// templateBuild starts a template build from a recipe file (JSON) or an
// image archive and follows its log to the end; a build that does not
// succeed is an error. Interrupted, it cancels the build.
func (c *cli) templateBuild(ctx context.Context, args []string) error {
	fs := c.flags("template build")
	c.jsonFlag(fs)
	recipe := fs.String("recipe", "", "recipe file (JSON or YAML; - for stdin)")
	image := fs.String("image", "", "OCI image layout or docker save archive (tar)")
	from := fs.String("from", "", "image reference the control plane pulls (python:3.12-slim)")
	detach := fs.Bool("detach", false, "print the build id and return without following it")
	if err := parse(fs, args); err != nil {
		return err
	}
	given := 0
	for _, s := range []string{*recipe, *image, *from} {
		if s != "" {
			given++
		}
	}
	if fs.NArg() != 1 || given != 1 {
		return usageError("template build: want one of --recipe FILE, --image FILE or --from REF, and a template name")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var b *wrenn.Build
	if *recipe != "" {
		var raw []byte
		if *recipe == "-" {
			raw, err = io.ReadAll(c.stdin)
		} else {
			raw, err = os.ReadFile(*recipe)
		}
		if err != nil {
			return fmt.Errorf("reading recipe: %w", err)
		}
		if raw, err = recipeJSON(raw); err != nil {
			return err
		}
		b, err = cl.BuildFromRecipe(ctx, fs.Arg(0), json.RawMessage(raw))
	} else if *from != "" {
		b, err = cl.BuildFromRef(ctx, fs.Arg(0), *from)
	} else {
		f, ferr := os.Open(*image)
		if ferr != nil {
			return fmt.Errorf("reading image: %w", ferr)
		}
		defer func() { _ = f.Close() }()
		b, err = cl.BuildFromImage(ctx, fs.Arg(0), f)
	}
	if err != nil {
		return err
	}
	if *detach {
		if c.json {
			return c.printJSON(b)
		}
		fmt.Fprintln(c.stdout, b.ID)
		return nil
	}
	end, err := cl.FollowBuild(ctx, b.ID, func(l wrenn.BuildLog) {
		if !c.json {
			fmt.Fprintln(c.stderr, l.Line)
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			_, _ = cl.CancelBuild(context.WithoutCancel(ctx), b.ID)
		}
		return err
	}
	if c.json {
		if err := c.printJSON(end); err != nil {
			return err
		}
	} else if end.Status == "succeeded" {
		fmt.Fprintln(c.stdout, end.Name)
	}
	if end.Status != "succeeded" {
		return fmt.Errorf("build %s %s: %s", end.ID, end.Status, end.Error)
	}
	return nil
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

// recipeJSON returns recipe as JSON: as it is when it is JSON, else read as
// YAML, which recipes are easier to write in.
func recipeJSON(recipe []byte) ([]byte, error) {
	if json.Valid(recipe) {
		return recipe, nil
	}
	var doc any
	if err := yaml.Unmarshal(recipe, &doc); err != nil {
		return nil, fmt.Errorf("the recipe is neither JSON nor YAML: %w", err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("the recipe's YAML has no JSON form (keys must be strings): %w", err)
	}
	return out, nil
}

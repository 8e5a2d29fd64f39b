package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pressly/goose/v3"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// migrate runs `wrenn-cp migrate up|down|status`. It needs only
// DATABASE_URL, so that the schema can be managed before the rest of the
// configuration exists.
func migrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) (err error) {
	if len(args) != 1 {
		return errors.New("usage: wrenn-cp migrate up|down|status")
	}
	url := getenv("DATABASE_URL")
	if url == "" {
		return errors.New("config: DATABASE_URL is required")
	}
	m, err := store.NewMigrator(url)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := m.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing migration connection: %w", cerr)
		}
	}()
	var out strings.Builder
	switch args[0] {
	case "up":
		res, err := m.Up(ctx)
		if err != nil {
			return fmt.Errorf("migrating up: %w", err)
		}
		for _, r := range res {
			fmt.Fprintf(&out, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
		}
		if len(res) == 0 {
			out.WriteString("no pending migrations\n")
		}
	case "down":
		r, err := m.Down(ctx)
		switch {
		case errors.Is(err, goose.ErrNoNextVersion):
			out.WriteString("no migrations to roll back\n")
		case err != nil:
			return fmt.Errorf("migrating down: %w", err)
		default:
			fmt.Fprintf(&out, "rolled back %s\n", r.Source.Path)
		}
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return fmt.Errorf("reading migration status: %w", err)
		}
		fmt.Fprintf(&out, "%-8s %-8s %-20s %s\n", "VERSION", "STATE", "APPLIED AT", "FILE")
		for _, s := range st {
			at := "-"
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Fprintf(&out, "%-8d %-8s %-20s %s\n", s.Source.Version, s.State, at, s.Source.Path)
		}
	default:
		return fmt.Errorf("unknown migrate command %q: want up, down or status", args[0])
	}
	_, err = io.WriteString(stdout, out.String())
	return err
}

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn/internal/network"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Bringing a capsule's sandbox up is the same ordered list of named steps
// whichever way it comes up — a fresh start, a resume from its pause, or a
// new capsule restored from a snapshot template:
//
//  1. record:  its directory and its record on disk (status starting), so
//     that a crash from here on leaves something recovery.go finds; a
//     resume has both already and skips it.
//  2. network: its namespace, veth, address, firewall entry and egress
//     policy (Setup for a new capsule, Renew for a paused one, which kept
//     its slot).
//  3. runtime: the driver boots the sandbox — Driver.Create from the
//     template, or Checkpointer.Restore from a saved state. Only this step
//     differs between the three.
//  4. envd:    wait until envd answers, then hand it the capsule's token,
//     environment and hostname (a resumed envd has them already).
//
// The caller records the final status, and on error removes what was made
// (adopt, or the resume's own clean-up).

// bootPlan says how bringUp does the steps that differ.
type bootPlan struct {
	// fresh: a new capsule — steps 1 and 2 create, and the record takes the
	// sandbox's address and start time. Otherwise the capsule is paused:
	// its record stays, its network is renewed.
	fresh bool
	// boot is step 3.
	boot func(ctx context.Context, spec runtime.Spec) (runtime.Info, error)
	// envdHolds is the token the booted envd already has: "" for a fresh
	// envd, the snapshot's source capsule's token for a restored template,
	// the capsule's own for a resume.
	envdHolds string
	// initEnvd: hand envd the capsule's token, environment and hostname
	// once it answers (not for a resume: its envd has them).
	initEnvd bool
}

// startPhases is how long the network, runtime and envd steps took, for
// the log.
type startPhases struct {
	network, runtime, envd time.Duration
}

// newRecord is step 1 of a fresh bring-up: the capsule's directory and
// record, with a new envd token.
func (c *Capsules) newRecord(spec CapsuleSpec, runtimeID, hostname, base string) (*capsuleRecord, error) {
	dir := c.dirOf(runtimeID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating capsule dir: %w", err)
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	tmpl := base
	if tmpl == "" {
		tmpl = spec.Template
	}
	meta, err := c.templateMeta(tmpl)
	if err != nil {
		return nil, err
	}
	rec := &capsuleRecord{Spec: spec, RuntimeID: runtimeID, Status: capsuleStarting, Token: token, Hostname: hostname, Base: base,
		DefaultUser: meta.DefaultUser}
	if err := writeRecord(dir, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// bringUp runs steps 2 to 4 for rec as plan says.
func (c *Capsules) bringUp(ctx context.Context, rec *capsuleRecord, plan bootPlan) (startPhases, error) {
	var (
		phases startPhases
		slot   network.Slot
	)
	steps := []struct {
		name string
		took *time.Duration
		run  func() error
	}{
		{"network", &phases.network, func() (err error) {
			if !plan.fresh {
				slot, err = c.cfg.Network.Renew(ctx, rec.RuntimeID)
			} else if slot, err = c.cfg.Network.Setup(ctx, rec.RuntimeID); err != nil {
				err = fmt.Errorf("setting up network: %w", err)
			} else {
				rec.Address = slot.Address.Addr().String()
			}
			if err != nil {
				return err
			}
			// Before the sandbox runs: its first packet meets its policy.
			return c.cfg.Network.SetPolicy(ctx, rec.RuntimeID, rec.Spec.policy())
		}},
		{"runtime", &phases.runtime, func() error {
			spec := c.runtimeSpec(rec)
			spec.Network = c.networkOf(slot)
			info, err := plan.boot(ctx, spec)
			if err == nil && plan.fresh {
				rec.StartedAt = info.StartedAt
			}
			return err
		}},
		{"envd", &phases.envd, func() error {
			if plan.envdHolds != "" {
				if err := waitEnvd(ctx, rec.Address, plan.envdHolds); err != nil {
					return err
				}
			}
			if plan.initEnvd {
				// With a fresh envd (holds ""), this waits for it first.
				return initEnvd(ctx, rec, plan.envdHolds, rec.Hostname)
			}
			return nil
		}},
	}
	for _, s := range steps {
		t0 := time.Now()
		err := s.run()
		*s.took = time.Since(t0)
		if err != nil {
			c.log.Debug("capsule bring-up step failed", "runtime_id", rec.RuntimeID, "step", s.name, "took", *s.took, "error", err)
			return phases, err
		}
	}
	return phases, nil
}

// templateMeta is what the agent reads from a base template's
// template.json beyond its default size (see docs/templates.md).
type templateMeta struct {
	// DefaultUser is the user of exec, PTY and file calls that name none;
	// empty means root.
	DefaultUser string `json:"default_user"`
}

// templateMeta reads base template name's template.json. A template
// without one has the defaults.
func (c *Capsules) templateMeta(name string) (templateMeta, error) {
	var m templateMeta
	b, err := os.ReadFile(filepath.Join(c.imagesDir(), name, "template.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("reading template %s: %w", name, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("reading template %s: template.json: %w", name, err)
	}
	if m.DefaultUser != "" && !validUserName(m.DefaultUser) {
		return m, fmt.Errorf("reading template %s: template.json: default_user %q is not a user name", name, m.DefaultUser)
	}
	return m, nil
}

// validUserName reports whether s looks like a Linux user name (or uid).
func validUserName(s string) bool {
	if len(s) > 32 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
		case (r == '-' || r == '.') && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

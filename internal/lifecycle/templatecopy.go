package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// templateCopyTimeout bounds one copy of a template between hosts; the
// base template (about 450 MB) takes seconds on a LAN.
const templateCopyTimeout = 30 * time.Minute

// copyable reports whether template t can be copied to another host: a
// root file system can, a snapshot's saved state cannot (it restores only
// on the host whose runtime saved it).
func copyable(t store.Template) bool {
	return t.Kind == store.TemplateBase || t.Kind == store.TemplateImage
}

// bringTemplate copies template t to a host that lacks it and could take
// a capsule asking ask, from a host that has it (store.PlanTemplateCopy),
// and adds it to that host's templates, so that placing the capsule again
// can succeed. Concurrent creates that need the same copy wait for one
// copy. It returns store.ErrNoHost when no host could receive it.
func (s *Service) bringTemplate(ctx context.Context, teamID string, t store.Template, ask scheduler.Ask) error {
	if s.copyTemplate == nil {
		return store.ErrNoHost
	}
	sizeMB := (t.SizeBytes + 1<<20 - 1) >> 20
	plan, err := s.store.PlanTemplateCopy(ctx, teamID, t.AgentName, ask, sizeMB)
	if err != nil {
		return err
	}
	key := t.AgentName + "@" + plan.To.ID
	_, err, _ = s.copies.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), templateCopyTimeout)
		defer cancel()
		start := time.Now()
		s.log.InfoContext(ctx, "copying template to a host that lacks it",
			"template", t.Name, "agent_template", t.AgentName, "from_host", plan.From.ID, "to_host", plan.To.ID)
		size, err := s.copyTemplate(ctx, plan.From, plan.To, t.AgentName)
		if err != nil {
			return nil, fmt.Errorf("copying template %q from host %s to host %s: %w", t.Name, plan.From.ID, plan.To.ID, err)
		}
		s.log.InfoContext(ctx, "template copied", "template", t.Name, "to_host", plan.To.ID,
			"size_bytes", size, "ms", time.Since(start).Milliseconds())
		return nil, s.store.AddHostTemplate(ctx, plan.To.ID, t.AgentName)
	})
	return err
}

// placeWithCopy is CreateCapsule's answer when it found no host with
// room among those that have the template: worth a copy of a copyable
// template to another host.
func placeWithCopy(t store.Template, err error) bool {
	var full *store.NoCapacityError
	return copyable(t) && (errors.Is(err, store.ErrNoHost) || errors.As(err, &full))
}

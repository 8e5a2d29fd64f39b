package lifecycle

import (
	"context"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// Reconcile settles the records of host hostID with what its heartbeat
// reported: the capsules it runs (with their status) and the template
// directories it holds. Capsules marked missing while the host was silent,
// and operations a dead control plane left half-recorded, take the host's
// word. What the host still holds of capsules that cannot run again, and
// snapshot directories nothing owns, is removed from it in the background.
func (s *Service) Reconcile(ctx context.Context, hostID string, reported []store.ReportedCapsule, templates []string) error {
	changed, err := s.store.ReconcileHost(ctx, hostID, reported, staleTransient)
	if err != nil {
		return err
	}
	for _, c := range changed {
		s.log.InfoContext(ctx, "capsule reconciled", "capsule_id", c.ID, "host_id", hostID, "from", c.From, "to", c.To)
	}
	finished, err := s.store.FinishedCapsulesOnHost(ctx, hostID, reported)
	if err != nil {
		return err
	}
	// A snapshot under way protects its directory for twice as long as a
	// snapshot may take.
	orphans, err := s.store.OrphanTemplates(ctx, templates, 2*snapshotTimeout)
	if err != nil {
		return err
	}
	if len(finished)+len(orphans) > 0 {
		// Not on the heartbeat's time: the removals may take a while.
		go s.cleanUpHost(context.WithoutCancel(ctx), hostID, finished, orphans)
	}
	return nil
}

// cleanUpHost has host hostID remove what nothing the control plane records
// owns any more: the capsules ids, recorded stopped or in error (a stopped
// capsule is never destroyed again: destroying one does not ask its host),
// and the snapshot directories templates, of no template and no snapshot
// under way. Each leftover is worked on by one heartbeat at a time; one
// that could not be removed is asked for again at the next heartbeat.
func (s *Service) cleanUpHost(ctx context.Context, hostID string, ids, templates []string) {
	h, err := s.store.Host(ctx, hostID)
	if err != nil {
		s.log.WarnContext(ctx, "removing leftovers from a host: reading the host", "host_id", hostID, "err", err)
		return
	}
	for _, id := range ids {
		s.oneAtATime("capsule:"+id, func() {
			s.log.InfoContext(ctx, "destroying a finished capsule its host still has", "capsule_id", id, "host_id", hostID)
			s.destroyBestEffort(ctx, h, id)
		})
	}
	for _, name := range templates {
		s.oneAtATime("template:"+name, func() {
			s.log.InfoContext(ctx, "removing a snapshot directory no template owns", "host_id", hostID, "template_id", name)
			s.deleteTemplateBestEffort(ctx, h, name)
		})
	}
}

// oneAtATime runs work unless work for key is running already (started by
// an earlier heartbeat), so that slow hosts do not pile up the same call.
func (s *Service) oneAtATime(key string, work func()) {
	if _, busy := s.leftovers.LoadOrStore(key, true); busy {
		return
	}
	defer s.leftovers.Delete(key)
	work()
}

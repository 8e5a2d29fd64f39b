package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/capsule"
)

// The warm pool keeps a few capsules booted and waiting, so that creating a
// capsule costs a token rotation instead of a sandbox boot (about 80 ms of
// runsc on a small machine). A waiting capsule has envd up, initialized with
// a pool token, and no user, processes or environment of its own; taking it
// sets the capsule's token, environment and hostname through envd's /init,
// which also retires the pool token. Capsules are interchangeable only
// within one profile (template and size), because a sandbox's memory and
// CPU limits are fixed when it boots; the pool keeps the profiles last
// asked for, and the templates' default sizes from the start.
//
// Waiting capsules are recorded on disk with status "pooled"; an agent that
// starts removes those of its predecessor, as it does any capsule that was
// never handed out.

// capsulePooled is the status of a waiting capsule's record.
const capsulePooled = string(capsule.Pooled)

// maxPoolProfiles bounds how many profiles are kept warm at once.
const maxPoolProfiles = 4

// poolHostname is the hostname of a waiting capsule; the user's is set when
// it is taken.
const poolHostname = "capsule"

// profile is what makes two capsules interchangeable.
type profile struct {
	Template string
	VCPUs    int
	MemoryMB int
	DiskMB   int
}

func profileOf(s CapsuleSpec) profile {
	return profile{Template: s.Template, VCPUs: s.VCPUs, MemoryMB: s.MemoryMB, DiskMB: s.DiskMB}
}

// pool is the warm pool of one Capsules. It is safe for concurrent use.
type pool struct {
	c    *Capsules
	size int // waiting capsules per profile; 0 = no pool

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // fill goroutines
	fillMu sync.Mutex     // one boot at a time: boots compete with users' work for the CPU

	mu       sync.Mutex
	ready    map[profile][]*capsuleRecord // guarded by mu
	profiles []profile                    // kept warm, most recently asked first; guarded by mu
	filling  map[profile]bool             // guarded by mu
	closed   bool                         // guarded by mu
}

func newPool(c *Capsules, size int) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{c: c, size: max(size, 0), ctx: ctx, cancel: cancel,
		ready: map[profile][]*capsuleRecord{}, filling: map[profile]bool{}}
}

// waiting is how many capsules wait in p to be handed out.
func (p *pool) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, recs := range p.ready {
		n += len(recs)
	}
	return n
}

// want marks p as asked for and tops its waiting capsules up in the
// background.
func (p *pool) want(prof profile) {
	if p.size == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.profiles = slices.DeleteFunc(p.profiles, func(q profile) bool { return q == prof })
	p.profiles = slices.Insert(p.profiles, 0, prof)
	if len(p.profiles) > maxPoolProfiles {
		dropped := p.profiles[maxPoolProfiles:]
		p.profiles = p.profiles[:maxPoolProfiles]
		for _, d := range dropped {
			p.discardLocked(d)
		}
	}
	if p.filling[prof] || len(p.ready[prof]) >= p.size {
		return
	}
	p.filling[prof] = true
	p.wg.Add(1)
	go p.fill(prof)
}

// discardLocked destroys the waiting capsules of a profile no longer kept.
func (p *pool) discardLocked(prof profile) {
	recs := p.ready[prof]
	delete(p.ready, prof)
	for _, rec := range recs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.destroy(rec)
		}()
	}
}

func (p *pool) destroy(rec *capsuleRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.c.remove(ctx, rec.RuntimeID); err != nil {
		p.c.log.Warn("removing a warm-pool capsule", "runtime_id", rec.RuntimeID, "error", err)
	}
}

// fill boots capsules of profile prof until it has p.size waiting, the
// profile is no longer kept, or the pool closes. A failed boot ends the
// round; the next want tries again.
func (p *pool) fill(prof profile) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.filling, prof)
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		enough := p.closed || len(p.ready[prof]) >= p.size || !slices.Contains(p.profiles, prof)
		p.mu.Unlock()
		if enough {
			return
		}
		rec, err := p.boot(prof)
		if err != nil {
			if p.ctx.Err() == nil {
				p.c.log.Warn("warming a capsule", "template", prof.Template, "error", err)
			}
			return
		}
		p.mu.Lock()
		if p.closed || !slices.Contains(p.profiles, prof) {
			p.mu.Unlock()
			p.destroy(rec)
			return
		}
		p.ready[prof] = append(p.ready[prof], rec)
		p.mu.Unlock()
	}
}

// boot starts one waiting capsule of profile prof.
func (p *pool) boot(prof profile) (*capsuleRecord, error) {
	p.fillMu.Lock()
	defer p.fillMu.Unlock()
	if err := p.ctx.Err(); err != nil {
		return nil, err
	}
	id := uuid.NewString()
	spec := CapsuleSpec{ID: id, Template: prof.Template, VCPUs: prof.VCPUs, MemoryMB: prof.MemoryMB, DiskMB: prof.DiskMB}
	if err := p.c.validate(spec); err != nil {
		return nil, err
	}
	// Recorded as no capsule's from the start: a Destroy of id must not
	// take it for a capsule of that id.
	spec.ID = ""
	var phases startPhases
	rec, err := p.c.start(p.ctx, spec, id, poolHostname, &phases)
	if err == nil {
		rec.Status = capsulePooled
		err = writeRecord(p.c.dirOf(id), rec)
	}
	if err != nil {
		if rerr := p.c.remove(context.Background(), id); rerr != nil {
			p.c.log.Error("cleaning up after a failed warm-pool start", "runtime_id", id, "error", rerr)
		}
		return nil, err
	}
	p.c.log.Debug("capsule warmed", "runtime_id", id, "template", prof.Template)
	return rec, nil
}

// take hands a waiting capsule of spec's profile to spec's capsule: its
// token is rotated to a fresh one and its environment and hostname set. It
// returns nil when none waits or the hand-over fails (the waiting capsule
// is then destroyed, and the caller boots a capsule the ordinary way).
func (p *pool) take(ctx context.Context, spec CapsuleSpec) *capsuleRecord {
	prof := profileOf(spec)
	p.mu.Lock()
	recs := p.ready[prof]
	if len(recs) == 0 {
		p.mu.Unlock()
		return nil
	}
	rec := recs[0]
	p.ready[prof] = recs[1:]
	p.mu.Unlock()

	err := p.handOver(ctx, rec, spec)
	if err != nil {
		p.c.log.Warn("taking a warm-pool capsule failed; starting one", "runtime_id", rec.RuntimeID, "error", err)
		p.destroy(rec)
		return nil
	}
	return rec
}

func (p *pool) handOver(ctx context.Context, rec *capsuleRecord, spec CapsuleSpec) error {
	token, err := newToken()
	if err != nil {
		return err
	}
	poolToken := rec.Token
	rec.Spec, rec.Token = spec, token
	// For its user the capsule starts now, not when the pool booted it.
	rec.StartedAt = time.Now()
	// Record first: if the agent dies after envd took the new token, the
	// record must hold it, or the capsule would be unreachable.
	rec.Status = capsuleStarting
	if err := writeRecord(p.c.dirOf(rec.RuntimeID), rec); err != nil {
		return err
	}
	// Booted with the open policy; its user's applies before envd is
	// handed over.
	if err := p.c.cfg.Network.SetPolicy(ctx, rec.RuntimeID, spec.policy()); err != nil {
		return err
	}
	if err := initEnvd(ctx, rec, poolToken, hostnameOf(spec.ID)); err != nil {
		return err
	}
	rec.Status = capsuleRunning
	return writeRecord(p.c.dirOf(rec.RuntimeID), rec)
}

// close stops filling and destroys every waiting capsule. Calling it again
// does nothing.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	for prof := range p.ready {
		p.discardLocked(prof)
	}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// defaultProfiles are the default sizes of the templates on this host, as
// their template.json gives them.
func (c *Capsules) defaultProfiles() []profile {
	var out []profile
	for _, name := range c.Templates() {
		if c.isImported(name) {
			continue // a team's template, not worth a warm capsule
		}
		b, err := os.ReadFile(filepath.Join(c.imagesDir(), name, "template.json"))
		if err != nil {
			continue
		}
		var t struct {
			VCPUs    int `json:"default_vcpus"`
			MemoryMB int `json:"default_memory_mb"`
			DiskMB   int `json:"default_disk_mb"`
		}
		if err := json.Unmarshal(b, &t); err != nil || t.VCPUs < 1 || t.MemoryMB < 1 || t.DiskMB < 1 {
			c.log.Warn("template.json has no usable default size; not warming it", "template", name, "error", err)
			continue
		}
		out = append(out, profile{Template: name, VCPUs: t.VCPUs, MemoryMB: t.MemoryMB, DiskMB: t.DiskMB})
	}
	return out
}

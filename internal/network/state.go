package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/egress"
)

// record is what persists of an allocation. The address is stored rather
// than the index so that a changed CIDR is noticed instead of silently
// moving live capsules to other addresses.
type record struct {
	CapsuleID string     `json:"capsule_id"`
	Address   netip.Addr `json:"address"`
	// Netns is the file the capsule's namespace is mounted on. Records of
	// agents that mounted them in /run/netns have none.
	Netns string `json:"netns,omitempty"`
	// Policy is the capsule's egress policy; none is the open policy.
	Policy *egress.Policy `json:"policy,omitempty"`
}

const recordExt = ".json"

func recordPath(dir, capsuleID string) string {
	return filepath.Join(dir, capsuleID+recordExt)
}

// writeRecord persists r atomically: a crash leaves either the old file or
// the new one, and once it returns the file survives a power loss.
func writeRecord(dir string, r record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding allocation: %w", err)
	}
	if err := durable.WriteFile(recordPath(dir, r.CapsuleID), data, 0o600); err != nil {
		return fmt.Errorf("saving allocation: %w", err)
	}
	return nil
}

// removeRecord deletes the allocation of capsuleID; a missing file is not an
// error so that teardown stays idempotent.
func removeRecord(dir, capsuleID string) error {
	if err := os.Remove(recordPath(dir, capsuleID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing allocation file: %w", err)
	}
	return durable.Sync(dir)
}

// readRecords loads every allocation in dir, removing temporary files a
// crash left behind.
func readRecords(dir string) ([]record, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	var recs []record
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		if e.IsDir() || !strings.HasSuffix(name, recordExt) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading allocation %s: %w", name, err)
		}
		var r record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("decoding allocation %s: %w", name, err)
		}
		if r.CapsuleID+recordExt != name {
			return nil, fmt.Errorf("allocation %s names capsule %q", name, r.CapsuleID)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

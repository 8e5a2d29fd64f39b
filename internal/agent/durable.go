package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn-dev/wrenn/internal/durable"
)

// Records: every record the agent keeps on disk (the host credential,
// capsule records, saved-state and snapshot metadata) is written with
// internal/durable, so that a crash or power loss leaves the old file or
// the new one, never half of one.

// writeJSONDurable writes v as JSON to path atomically and synced.
func writeJSONDurable(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return durable.WriteFile(path, b, 0o600)
}

// writeRecord saves rec in dir atomically and durably.
func writeRecord(dir string, rec *capsuleRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding capsule record: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, recordFile), b, 0o600); err != nil {
		return fmt.Errorf("saving capsule record: %w", err)
	}
	return nil
}

func readRecord(dir string) (*capsuleRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, fmt.Errorf("reading capsule record: %w", err)
	}
	var rec capsuleRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("reading capsule record: %w", err)
	}
	return &rec, nil
}

// readSaved reads the marker of a complete saved state in dir.
func readSaved(dir string) (savedState, error) {
	b, err := os.ReadFile(filepath.Join(dir, savedMarker))
	if err != nil {
		return savedState{}, fmt.Errorf("saved state is missing: %w", err)
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return savedState{}, fmt.Errorf("saved state marker is unreadable: %w", err)
	}
	return s, nil
}

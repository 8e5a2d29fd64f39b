package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Durable writes: every record the agent keeps on disk (the host
// credential, capsule records, saved-state and snapshot metadata) is written
// with these helpers, so that a crash or power loss leaves the old file or
// the new one, never half of one.

// writeFileAtomic replaces path with data: temporary file with mode perm
// from the start (a secret is never readable by others, not even briefly),
// fsync, rename, fsync of the directory. A crash leaves the old file or the
// new one, never a torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // fails harmlessly once renamed
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making the entries in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// writeJSONDurable writes v as JSON to path atomically and synced.
func writeJSONDurable(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

// writeRecord saves rec in dir atomically and durably.
func writeRecord(dir string, rec *capsuleRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding capsule record: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, recordFile), b, 0o600); err != nil {
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

package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wrenn-dev/wrenn/internal/durable"
)

// record is what the driver keeps about one VM in <StateDir>/<id>.json:
// enough for an agent started later to find the Firecracker process and
// its socket (List, Info), stop it and remove what it made (Destroy).
type record struct {
	ID string `json:"id"`
	// PID is the Firecracker process; PIDStart its start time (clock ticks
	// after boot, /proc/<pid>/stat), so that a pid the kernel gave to
	// another process since is not taken for the VM.
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	// Dir is the capsule's directory; Root, Socket and Jail its layout.
	Dir    string `json:"dir"`
	Root   string `json:"root"`
	Socket string `json:"socket"`
	Jail   string `json:"jail,omitempty"`
	// UID is the uid the jailer runs the VM as (0 without a jailer): held
	// by this VM until its record is removed (reserveUID).
	UID int `json:"uid,omitempty"`
	// Address is the guest's address (empty without a network): a saved
	// state keeps it, since the guest kernel holds it in memory.
	Address   string    `json:"address,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// DirtyTracked: the VM was loaded from the memory file in its root
	// with dirty page tracking on, so its next snapshot may be a diff
	// written back onto that file (see save).
	DirtyTracked bool `json:"dirty_tracked,omitempty"`
}

func (d *Driver) recordPath(id string) string {
	return filepath.Join(d.cfg.StateDir, id+".json")
}

// readRecord returns the record of capsule id; fs.ErrNotExist when there
// is none.
func (d *Driver) readRecord(id string) (record, error) {
	if !validID(id) {
		return record{}, fs.ErrNotExist
	}
	b, err := os.ReadFile(d.recordPath(id))
	if err != nil {
		return record{}, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("reading record of %s: %w", id, err)
	}
	return r, nil
}

// writeRecord writes r durably: an agent that dies right after must find it.
func (d *Driver) writeRecord(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := durable.WriteFile(d.recordPath(r.ID), b, 0o600); err != nil {
		return fmt.Errorf("writing record: %w", err)
	}
	return nil
}

// records lists every record in the state directory.
func (d *Driver) records() ([]record, error) {
	entries, err := os.ReadDir(d.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("listing VM records: %w", err)
	}
	var out []record
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() || !validID(id) {
			continue
		}
		r, err := d.readRecord(id)
		if err != nil {
			d.log.Warn("unreadable VM record", "capsule_id", id, "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// alive reports whether r's Firecracker process still runs: the pid exists,
// is not a zombie, and started when the record says.
func alive(r record) bool {
	if r.PID <= 0 {
		return false
	}
	start, state, err := procStart(r.PID)
	return err == nil && start == r.PIDStart && state != "Z" && state != "X"
}

// procStart reads a process's start time and state from /proc/<pid>/stat.
func procStart(pid int) (uint64, string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start behind the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, "", errors.New("short /proc stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, f[0], err
}

// kill stops r's process (SIGKILL) if it is still the VM's, and waits up to
// timeout until it is gone.
func kill(r record, timeout time.Duration) error {
	if !alive(r) {
		return nil
	}
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing firecracker (pid %d): %w", r.PID, err)
	}
	deadline := time.Now().Add(timeout)
	for alive(r) {
		if time.Now().After(deadline) {
			return fmt.Errorf("firecracker (pid %d) still runs %v after SIGKILL", r.PID, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn/internal/durable"
)

// CredentialFile is the name, under WRENN_DIR, of the file holding the
// host's credential.
const CredentialFile = "host-token"

// ErrNotRegistered is returned by LoadCredential when the host has no
// credential file yet.
var ErrNotRegistered = errors.New("host is not registered")

// Credential is what the agent keeps between runs to prove who it is to the
// control plane, and to know who the control plane is. Its JSON form is the
// host-token file described in docs/host-protocol.md.
type Credential struct {
	HostID              string    `json:"host_id"`
	CPURL               string    `json:"cp_url"`
	Credential          string    `json:"credential"`
	CredentialExpiresAt time.Time `json:"credential_expires_at"`
	RefreshToken        string    `json:"refresh_token"`
	CPPublicKey         string    `json:"cp_public_key"`
}

// validate reports what is missing from a credential read from disk, so a
// truncated or hand-edited file fails at start-up and not at the first
// heartbeat.
func (c *Credential) validate() error {
	switch {
	case c.HostID == "":
		return errors.New("host_id is empty")
	case c.CPURL == "":
		return errors.New("cp_url is empty")
	case c.Credential == "":
		return errors.New("credential is empty")
	case c.RefreshToken == "":
		return errors.New("refresh_token is empty")
	case c.CPPublicKey == "":
		return errors.New("cp_public_key is empty")
	}
	return nil
}

// LoadCredential reads dir's credential file. It returns an error wrapping
// ErrNotRegistered when the file does not exist.
func LoadCredential(dir string) (Credential, error) {
	path := filepath.Join(dir, CredentialFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Credential{}, fmt.Errorf("loading credential: %s does not exist: %w", path, ErrNotRegistered)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("loading credential: %w", err)
	}
	var c Credential
	if err := json.Unmarshal(b, &c); err != nil {
		return Credential{}, fmt.Errorf("loading credential from %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return Credential{}, fmt.Errorf("loading credential from %s: %w", path, err)
	}
	return c, nil
}

// SaveCredential writes c to dir's credential file with mode 0600. The write
// is atomic (temporary file, fsync, rename, fsync of the directory): a crash
// leaves either the old credential or the new one, never a torn file, which
// matters because the refresh token in it is single use.
func SaveCredential(dir string, c Credential) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("saving credential: %w", err)
	}
	b = append(b, '\n')
	if err := durable.WriteFile(filepath.Join(dir, CredentialFile), b, 0o600); err != nil {
		return fmt.Errorf("saving credential: %w", err)
	}
	return nil
}

// EnsureDir creates dir with mode 0700 when it does not exist. An existing
// directory is left as the operator made it.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return nil
}

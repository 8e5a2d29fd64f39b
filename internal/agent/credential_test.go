package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCredentialRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := Credential{
		HostID:              "host-1",
		CPURL:               "http://127.0.0.1:8000",
		Credential:          "wrnh_abc",
		CredentialExpiresAt: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		RefreshToken:        "wrnr_def",
		CPPublicKey:         "AAAA",
	}
	if err := SaveCredential(dir, want); err != nil {
		t.Fatalf("SaveCredential: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, CredentialFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("credential file mode = %o, want 600", mode)
	}
	got, err := LoadCredential(dir)
	if err != nil {
		t.Fatalf("LoadCredential: %v", err)
	}
	if got != want {
		t.Errorf("LoadCredential = %+v, want %+v", got, want)
	}

	// Overwriting leaves exactly one file, the new one: no temporary
	// files behind, nothing else readable.
	want.Credential = "wrnh_new"
	if err := SaveCredential(dir, want); err != nil {
		t.Fatalf("SaveCredential again: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != CredentialFile {
		t.Errorf("dir holds %v, want only %s", entries, CredentialFile)
	}
	if got, _ := LoadCredential(dir); got.Credential != "wrnh_new" {
		t.Errorf("after overwrite credential = %q, want wrnh_new", got.Credential)
	}
}

func TestLoadCredentialMissingOrBroken(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCredential(dir); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("LoadCredential of empty dir = %v, want ErrNotRegistered", err)
	}
	for _, content := range []string{"", "{", `{"host_id":"h"}`} {
		if err := os.WriteFile(filepath.Join(dir, CredentialFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadCredential(dir)
		if err == nil || errors.Is(err, ErrNotRegistered) {
			t.Errorf("LoadCredential of %q = %v, want a parse or validation error", content, err)
		}
	}
}

func TestEnsureDirMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "wrenn")
	if err := EnsureDir(dir); err != nil {
		t.Fatalf("EnsureDir: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("mode = %v, want a directory closed to group and others", fi.Mode())
	}
}

func TestValidateAddress(t *testing.T) {
	for _, ok := range []string{"10.0.0.5:50051", "node-1:1", "[::1]:65535"} {
		if err := ValidateAddress(ok); err != nil {
			t.Errorf("ValidateAddress(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "10.0.0.5", ":50051", "10.0.0.5:0", "10.0.0.5:65536", "10.0.0.5:http", "10.0.0.5:-1"} {
		if err := ValidateAddress(bad); err == nil {
			t.Errorf("ValidateAddress(%q) accepted", bad)
		}
	}
}

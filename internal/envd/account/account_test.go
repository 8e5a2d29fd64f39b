package account

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLookup(t *testing.T) {
	root, err := Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	if root.UID != 0 || root.GID != 0 || root.Home == "" {
		t.Errorf("root = %+v", root)
	}
	byID, err := Lookup("0")
	if err != nil || byID.Name != "root" {
		t.Errorf("Lookup(\"0\") = %+v, %v; want root", byID, err)
	}
	for _, name := range []string{"", "no-such-user-xyz", "999999"} {
		if _, err := Lookup(name); !errors.Is(err, ErrUnknown) {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknown", name, err)
		}
	}
}

func TestCheckAppliesPermissionBits(t *testing.T) {
	nobody, err := Lookup("nobody")
	if err != nil {
		t.Skipf("the permission test needs the unprivileged nobody user from /etc/passwd: %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Make the whole chain searchable so that only the bits under test matter.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private")
	public := filepath.Join(dir, "public")
	if err := os.WriteFile(private, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(public, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	root := &Account{Name: "root"}
	for _, tc := range []struct {
		acct *Account
		path string
		want uint32
		ok   bool
	}{
		{nobody, public, Read, true},
		{nobody, public, Write, false},
		{nobody, private, Read, false},
		{root, private, Read | Write, true},
	} {
		err := tc.acct.Check(tc.path, tc.want)
		if (err == nil) != tc.ok {
			t.Errorf("%s Check(%s, %o) = %v, want ok=%v", tc.acct.Name, tc.path, tc.want, err, tc.ok)
		}
		if err != nil && !errors.Is(err, fs.ErrPermission) {
			t.Errorf("error %v is not a permission error", err)
		}
	}
	if err := nobody.CheckCreate(filepath.Join(dir, "new", "file")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("nobody creating under a root 0755 dir: %v, want permission error", err)
	}
	if err := root.CheckCreate(filepath.Join(dir, "new", "file")); err != nil {
		t.Errorf("root creating: %v", err)
	}
	if err := nobody.Check(filepath.Join(dir, "missing"), Read); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want not exist", err)
	}
}

func TestResolvePrefersNameThenDefaultThenSelf(t *testing.T) {
	for _, tc := range []struct {
		name, def string
		wantUID   uint32
	}{
		{"root", "no-such-user-xyz", 0},
		{"", "root", 0},
		{"", "", uint32(os.Geteuid())},
	} {
		a, err := Resolve(tc.name, tc.def)
		if err != nil || a.UID != tc.wantUID {
			t.Errorf("Resolve(%q, %q) = %+v, %v; want uid %d", tc.name, tc.def, a, err, tc.wantUID)
		}
	}
	if _, err := Resolve("", "no-such-user-xyz"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Resolve with an unknown default: %v, want ErrUnknown", err)
	}
}

func TestLoginShell(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	content := "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/zsh\nnoshell:x:1001:1001::/home/n:\nbad:line\n"
	if err := os.WriteFile(passwd, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"root": "/bin/bash", "user": "/bin/zsh", "noshell": "", "bad": "", "absent": ""} {
		if got := passwdShell(passwd, name); got != want {
			t.Errorf("passwdShell(%q) = %q, want %q", name, got, want)
		}
	}
	if got := passwdShell(filepath.Join(t.TempDir(), "none"), "root"); got != "" {
		t.Errorf("without a passwd file: %q", got)
	}
	for shell, want := range map[string]string{"": "/bin/sh", "bash": "/bin/sh", "/bin/bash": "/bin/bash"} {
		if got := (&Account{Shell: shell}).LoginShell(); got != want {
			t.Errorf("LoginShell of %q = %q, want %q", shell, got, want)
		}
	}
	root, err := Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	if root.Shell != passwdShell(passwdFile, "root") || root.Shell == "" {
		t.Errorf("Lookup(root).Shell = %q", root.Shell)
	}
}

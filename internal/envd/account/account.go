// Package account resolves the Linux accounts that envd runs processes and
// file operations as, and checks what such an account may do with a path.
//
// Lookups read /etc/passwd and /etc/group through os/user, which needs no cgo.
// envd normally runs as root, so the kernel would allow everything: the access
// checks here apply the classic owner/group/other permission bits for the
// account instead, so that an operation "as nobody" fails where nobody's own
// syscall would.
package account

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnknown is returned (wrapped) by Lookup for a user that does not exist.
var ErrUnknown = errors.New("unknown user")

// Account is a resolved Linux user. It is immutable and safe for concurrent use.
type Account struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
	// Shell is the login shell of its /etc/passwd entry ("" when it has
	// none there).
	Shell string
}

// Access bits for Check, as in access(2).
const (
	Read    = 4
	Write   = 2
	Execute = 1
)

// Lookup resolves a user by name (or numeric uid). It returns an error
// wrapping ErrUnknown when there is no such user.
func Lookup(name string) (*Account, error) {
	if name == "" {
		return nil, fmt.Errorf("looking up user: %w: empty name", ErrUnknown)
	}
	var unknown user.UnknownUserError
	var unknownID user.UnknownUserIdError
	u, err := user.Lookup(name)
	if _, convErr := strconv.Atoi(name); errors.As(err, &unknown) && convErr == nil {
		u, err = user.LookupId(name)
	}
	switch {
	case errors.As(err, &unknown), errors.As(err, &unknownID):
		return nil, fmt.Errorf("looking up user %q: %w", name, ErrUnknown)
	case err != nil:
		return nil, fmt.Errorf("looking up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("looking up user %q: bad uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("looking up user %q: bad gid %q", name, u.Gid)
	}
	a := &Account{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				a.Groups = append(a.Groups, uint32(g))
			}
		}
	}
	if a.Home == "" {
		a.Home = "/"
	}
	a.Shell = passwdShell(passwdFile, a.Name)
	return a, nil
}

// passwdFile is where login shells are read from.
const passwdFile = "/etc/passwd"

// passwdShell returns the shell field of name's line in the passwd file
// at path, or "" (no file, no such line, or an empty field). os/user does
// not expose it.
func passwdShell(path, name string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == name {
			return strings.TrimSpace(f[6])
		}
	}
	return ""
}

// LoginShell is a's login shell, /bin/sh when its entry names none.
func (a *Account) LoginShell() string {
	if a.Shell == "" || !filepath.IsAbs(a.Shell) {
		return "/bin/sh"
	}
	return a.Shell
}

// Resolve looks up the user a call runs as: name, else def (the /init
// default user), else the user envd itself runs as. Errors are Lookup's.
func Resolve(name, def string) (*Account, error) {
	if name == "" {
		name = def
	}
	if name == "" {
		name = strconv.Itoa(os.Geteuid())
	}
	return Lookup(name)
}

// Credential returns the credential a child process needs to run as a, or nil
// when envd already runs as a.
func (a *Account) Credential() *syscall.Credential {
	if uint32(os.Geteuid()) == a.UID && uint32(os.Getegid()) == a.GID {
		return nil
	}
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups, NoSetGroups: false}
}

// Env returns the identity variables of a.
func (a *Account) Env() map[string]string {
	return map[string]string{"HOME": a.Home, "USER": a.Name, "LOGNAME": a.Name}
}

// privileged reports whether permission bits do not apply to a.
func (a *Account) privileged() bool { return a.UID == 0 }

// inGroup reports whether a is a member of gid.
func (a *Account) inGroup(gid uint32) bool {
	if a.GID == gid {
		return true
	}
	for _, g := range a.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// allowed reports whether a has the want bits on fi.
func (a *Account) allowed(fi fs.FileInfo, want uint32) bool {
	if a.privileged() {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	perm := uint32(fi.Mode().Perm())
	var bits uint32
	switch {
	case st.Uid == a.UID:
		bits = perm >> 6
	case a.inGroup(st.Gid):
		bits = perm >> 3
	default:
		bits = perm
	}
	return bits&7&want == want
}

// Check reports nil when a can reach path (search permission on every parent
// directory) and has the want bits on it. It returns the *fs.PathError of the
// failing stat (e.g. wrapping fs.ErrNotExist), or one wrapping
// fs.ErrPermission.
func (a *Account) Check(path string, want uint32) error {
	if err := a.checkParents(path); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !a.allowed(fi, want) {
		return &fs.PathError{Op: "access", Path: path, Err: fs.ErrPermission}
	}
	return nil
}

// CheckCreate reports nil when a may create path, including any missing
// parent directories: it needs search permission down to the deepest existing
// ancestor and write permission on it.
func (a *Account) CheckCreate(path string) error {
	dir := filepath.Dir(path)
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return &fs.PathError{Op: "access", Path: dir, Err: syscall.ENOTDIR}
			}
			if err := a.checkParents(dir); err != nil {
				return err
			}
			if !a.allowed(fi, Write|Execute) {
				return &fs.PathError{Op: "access", Path: dir, Err: fs.ErrPermission}
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return err
		}
		dir = parent
	}
}

// checkParents checks search permission on every ancestor of path.
func (a *Account) checkParents(path string) error {
	if a.privileged() {
		return nil
	}
	dir := filepath.Dir(path)
	var chain []string
	for {
		chain = append(chain, dir)
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		fi, err := os.Stat(chain[i])
		if err != nil {
			return err
		}
		if !a.allowed(fi, Execute) {
			return &fs.PathError{Op: "access", Path: chain[i], Err: fs.ErrPermission}
		}
	}
	return nil
}

// Chown gives path to a (without following a final symlink). It does
// nothing when envd is not root, since only root may give files away.
func (a *Account) Chown(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(path, int(a.UID), int(a.GID)); err != nil {
		return fmt.Errorf("changing owner of %s: %w", path, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents with mode perm, giving each
// directory it creates to a.
func (a *Account) MkdirAll(dir string, perm fs.FileMode) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := a.MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return a.Chown(dir)
}

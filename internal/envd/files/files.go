// Package files serves envd's filesystem operations: the FilesystemService
// RPCs (stat, list, mkdir, move, remove, watch) and the streamed HTTP file
// transfer routes (GET and POST /files). Every operation runs with the
// permissions of a named user and takes absolute paths only.
package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn-dev/wrenn/internal/envd/account"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// Errors returned (wrapped) for bad requests.
var (
	ErrInvalid = errors.New("invalid argument")
	ErrState   = errors.New("failed precondition")
)

// Service implements the filesystem RPCs and file transfer routes. It is safe
// for concurrent use.
type Service struct {
	log         *slog.Logger
	keepalive   time.Duration
	defaultUser func() string
}

// NewService returns a Service that sends a keepalive event on Watch streams
// every keepalive (default 15 s); defaultUser names the user of calls that
// give none (the /init default).
func NewService(logger *slog.Logger, keepalive time.Duration, defaultUser func() string) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if keepalive <= 0 {
		keepalive = 15 * time.Second
	}
	return &Service{log: logger, keepalive: keepalive, defaultUser: defaultUser}
}

// account resolves the user of a call.
func (s *Service) account(name string) (*account.Account, error) {
	var def string
	if s.defaultUser != nil {
		def = s.defaultUser()
	}
	a, err := account.Resolve(name, def)
	if errors.Is(err, account.ErrUnknown) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return a, err
}

// cleanPath checks that p is a usable absolute path and cleans it.
func cleanPath(what, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: missing %s", ErrInvalid, what)
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %s contains a NUL byte", ErrInvalid, what)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: %s %q is not absolute", ErrInvalid, what, p)
	}
	return filepath.Clean(p), nil
}

// code returns the RPC code for err.
func code(err error) connect.Code {
	switch {
	case errors.Is(err, ErrInvalid):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrState):
		return connect.CodeFailedPrecondition
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	// Specific errnos first: ENOTEMPTY would otherwise match fs.ErrExist.
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.ENAMETOOLONG, syscall.ELOOP:
			return connect.CodeInvalidArgument
		case syscall.ENOTEMPTY, syscall.EXDEV, syscall.EBUSY:
			return connect.CodeFailedPrecondition
		case syscall.EROFS:
			return connect.CodePermissionDenied
		case syscall.ENOSPC, syscall.EDQUOT:
			return connect.CodeResourceExhausted
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return connect.CodeNotFound
	case errors.Is(err, fs.ErrExist):
		return connect.CodeAlreadyExists
	case errors.Is(err, fs.ErrPermission):
		return connect.CodePermissionDenied
	}
	return connect.CodeInternal
}

// rpcError gives err the RPC code its kind calls for, logging internal ones.
func (s *Service) rpcError(err error) error {
	c := code(err)
	if c == connect.CodeInternal {
		s.log.Error("filesystem operation failed", "err", err)
	}
	return connect.NewError(c, err)
}

// names caches uid and gid lookups within one call.
type names struct {
	users, groups map[uint32]string
}

func (n *names) user(uid uint32) string {
	if name, ok := n.users[uid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if n.users == nil {
		n.users = map[uint32]string{}
	}
	n.users[uid] = name
	return name
}

func (n *names) group(gid uint32) string {
	if name, ok := n.groups[gid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	if n.groups == nil {
		n.groups = map[uint32]string{}
	}
	n.groups[gid] = name
	return name
}

// entry describes path, whose Lstat is fi.
func (n *names) entry(path string, fi fs.FileInfo) *envdv1.EntryInfo {
	e := &envdv1.EntryInfo{
		Name:         fi.Name(),
		Path:         path,
		Size:         fi.Size(),
		Permissions:  fi.Mode().String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	switch {
	case fi.Mode().IsRegular():
		e.Type = envdv1.FileType_FILE_TYPE_FILE
	case fi.IsDir():
		e.Type = envdv1.FileType_FILE_TYPE_DIRECTORY
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = envdv1.FileType_FILE_TYPE_SYMLINK
		e.SymlinkTarget, _ = os.Readlink(path)
	default:
		e.Type = envdv1.FileType_FILE_TYPE_OTHER
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Mode = st.Mode & 0o7777
		e.Owner = n.user(st.Uid)
		e.Group = n.group(st.Gid)
	}
	return e
}

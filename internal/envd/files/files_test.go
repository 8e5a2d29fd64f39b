package files

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"connectrpc.com/connect"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want connect.Code
	}{
		{fmt.Errorf("x: %w", ErrInvalid), connect.CodeInvalidArgument},
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, connect.CodeNotFound},
		{&fs.PathError{Op: "mkdir", Path: "/x", Err: syscall.EEXIST}, connect.CodeAlreadyExists},
		{&fs.PathError{Op: "remove", Path: "/x", Err: syscall.ENOTEMPTY}, connect.CodeFailedPrecondition},
		{&fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, connect.CodePermissionDenied},
		{&os.LinkError{Op: "rename", Old: "/a", New: "/b", Err: syscall.EXDEV}, connect.CodeFailedPrecondition},
		{&fs.PathError{Op: "open", Path: "/x/y", Err: syscall.ENOTDIR}, connect.CodeInvalidArgument},
		{&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, connect.CodeResourceExhausted},
		{fmt.Errorf("something else"), connect.CodeInternal},
	} {
		if got := code(tc.err); got != tc.want {
			t.Errorf("code(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{"/a/../b/": "/b", "/": "/", "//x//y": "/x/y"} {
		if got, err := cleanPath("path", in); err != nil || got != want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a/b", "./a", "/a\x00b"} {
		if _, err := cleanPath("path", in); err == nil {
			t.Errorf("cleanPath(%q): no error", in)
		}
	}
}

package files

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/account"
	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
)

// copyBufferSize is the buffer an upload streams through; with HTTP's own
// buffers it bounds an upload's memory whatever the file size.
const copyBufferSize = 256 << 10

// Download serves GET /files?path=...&user=...: the file's bytes, with Range,
// If-Modified-Since and friends handled by http.ServeContent.
func (s *Service) Download() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		path, err := cleanPath("path", q.Get("path"))
		if err != nil {
			s.writeError(w, err)
			return
		}
		acct, err := s.account(q.Get("user"))
		if err != nil {
			s.writeError(w, err)
			return
		}
		if err := acct.Check(path, account.Read); err != nil {
			s.writeError(w, fmt.Errorf("reading file: %w", err))
			return
		}
		// O_NONBLOCK: opening a FIFO must not wait for a writer; anything
		// but a regular file is refused below.
		f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			s.writeError(w, fmt.Errorf("reading file: %w", err))
			return
		}
		defer func() { _ = f.Close() }()
		fi, err := f.Stat()
		if err != nil {
			s.writeError(w, fmt.Errorf("reading file: %w", err))
			return
		}
		if !fi.Mode().IsRegular() {
			s.writeError(w, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path))
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if fi.Size() == 0 || !seekable(f) {
			// Files of /proc, /sys and cgroup file systems say they are
			// empty, and some cannot seek: their size is known only once
			// read. They are sent whole as they read, without ranges.
			if _, err := io.Copy(w, f); err != nil {
				s.log.Debug("download cut short", "path", path, "err", err)
			}
			return
		}
		http.ServeContent(w, r, "", fi.ModTime(), f)
	})
}

// seekable reports whether f can seek to its end and back, which
// http.ServeContent needs to learn the size and serve ranges.
func seekable(f *os.File) bool {
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return false
	}
	_, err := f.Seek(0, io.SeekStart)
	return err == nil
}

// Upload serves POST /files?path=...&mode=...&user=...: it streams the body
// (raw, or the "file" part of a multipart form) into a temporary file next to
// the target, syncs it and renames it over the target, so readers see the old
// file or the new one, never a mix. Missing parent directories are created,
// and everything created belongs to the user.
func (s *Service) Upload() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mode := fs.FileMode(0o644)
		if m := q.Get("mode"); m != "" {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil || fs.FileMode(v)&^fs.ModePerm != 0 {
				s.writeError(w, fmt.Errorf("%w: mode %q is not an octal permission like 644", ErrInvalid, m))
				return
			}
			mode = fs.FileMode(v)
		}
		acct, err := s.account(q.Get("user"))
		if err != nil {
			s.writeError(w, err)
			return
		}
		rawPath := q.Get("path")
		body := io.Reader(r.Body)
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
			mr, err := r.MultipartReader()
			if err != nil {
				s.writeError(w, fmt.Errorf("%w: reading multipart form: %w", ErrInvalid, err))
				return
			}
			body = nil
			for body == nil {
				part, err := mr.NextPart()
				if err != nil {
					s.writeError(w, fmt.Errorf("%w: multipart form has no file part", ErrInvalid))
					return
				}
				switch {
				case part.FormName() == "path" && rawPath == "":
					b, err := io.ReadAll(io.LimitReader(part, 4097))
					if err != nil || len(b) > 4096 {
						s.writeError(w, fmt.Errorf("%w: bad path field", ErrInvalid))
						return
					}
					rawPath = string(b)
				case part.FormName() == "file" || part.FileName() != "":
					body = part
				}
			}
		}
		path, err := cleanPath("path", rawPath)
		if err != nil {
			s.writeError(w, err)
			return
		}
		n, err := s.store(path, body, mode, acct)
		if err != nil {
			s.writeError(w, err)
			return
		}
		s.log.Info("file uploaded", "path", path, "size", n, "user", acct.Name)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(envdclient.UploadResult{Path: path, Size: n})
	})
}

// store writes body to path atomically.
func (s *Service) store(path string, body io.Reader, mode fs.FileMode, acct *account.Account) (n int64, err error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return 0, fmt.Errorf("%w: %s is a directory", ErrInvalid, path)
	}
	if err := acct.CheckCreate(path); err != nil {
		return 0, fmt.Errorf("writing file: %w", err)
	}
	dir := filepath.Dir(path)
	if err := acct.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("writing file: creating parents: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".envd-upload-*")
	if err != nil {
		return 0, fmt.Errorf("writing file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	buf := make([]byte, copyBufferSize)
	// Hide the file's ReadFrom so the copy goes through buf.
	n, err = io.CopyBuffer(struct{ io.Writer }{tmp}, body, buf)
	if err != nil {
		return n, fmt.Errorf("writing file: receiving body: %w", err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return n, fmt.Errorf("writing file: %w", err)
	}
	if err = acct.Chown(tmp.Name()); err != nil {
		return n, err
	}
	if err = tmp.Sync(); err != nil {
		return n, fmt.Errorf("writing file: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return n, fmt.Errorf("writing file: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return n, fmt.Errorf("writing file: %w", err)
	}
	// Make the rename itself durable.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return n, nil
}

// httpStatus maps RPC codes to HTTP statuses for the file routes.
var httpStatus = map[connect.Code]int{
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeAlreadyExists:      http.StatusConflict,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeFailedPrecondition: http.StatusPreconditionFailed,
	connect.CodeResourceExhausted:  http.StatusInsufficientStorage,
	connect.CodeCanceled:           499,
	connect.CodeInternal:           http.StatusInternalServerError,
}

// writeError answers with envd's JSON error shape,
// {"error":{"code":"not_found","message":"..."}}.
func (s *Service) writeError(w http.ResponseWriter, err error) {
	c := code(err)
	status, ok := httpStatus[c]
	if !ok {
		status = http.StatusInternalServerError
	}
	msg := err.Error()
	if c == connect.CodeInternal {
		s.log.Error("file transfer failed", "err", err)
	}
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		status = http.StatusRequestEntityTooLarge
	}
	WriteError(w, status, c.String(), msg)
}

// WriteError writes envd's JSON error shape with the given status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, message
	_ = json.NewEncoder(w).Encode(body)
}

package api

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// removeTimeout bounds a remove, which may walk a large tree.
const removeTimeout = 10 * time.Minute

// copyBuffer is the buffer a download is copied through.
const copyBuffer = 256 << 10

// entryJSON describes a file, directory or link in a capsule.
type entryJSON struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	Type          string    `json:"type"`
	Size          int64     `json:"size"`
	Mode          uint32    `json:"mode"`
	Permissions   string    `json:"permissions"`
	Owner         string    `json:"owner"`
	Group         string    `json:"group"`
	ModifiedAt    time.Time `json:"modified_at"`
	SymlinkTarget *string   `json:"symlink_target"`
}

func toEntryJSON(e *envdv1.EntryInfo) entryJSON {
	typ := "other"
	switch e.GetType() {
	case envdv1.FileType_FILE_TYPE_FILE:
		typ = "file"
	case envdv1.FileType_FILE_TYPE_DIRECTORY:
		typ = "directory"
	case envdv1.FileType_FILE_TYPE_SYMLINK:
		typ = "symlink"
	}
	return entryJSON{
		Name: e.GetName(), Path: e.GetPath(), Type: typ, Size: e.GetSize(), Mode: e.GetMode(),
		Permissions: e.GetPermissions(), Owner: e.GetOwner(), Group: e.GetGroup(),
		ModifiedAt: e.GetModifiedTime().AsTime().UTC(), SymlinkTarget: ptr(e.GetSymlinkTarget()),
	}
}

// parseMode reads permission bits written in octal ("644", "0755").
func parseMode(field, m string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(m, "0o"), 8, 32)
	if err != nil || v == 0 || v > 0o777 {
		return 0, errorf(codeInvalid, "%s must be octal permission bits between 1 and 777, like \"644\", not %q", field, m)
	}
	return uint32(v), nil
}

// uploadBody wraps a request body handed to envd, so that a client that
// stops sending midway is told so rather than blamed on the capsule.
// The transport reads it in a goroutine of its own, which may still be
// reading when Upload returns.
type uploadBody struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (b *uploadBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
	}
	return n, err
}

// failed returns the error reading the client's body, if any.
func (b *uploadBody) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// upload streams body into path and records the write.
func (s *server) upload(w http.ResponseWriter, r *http.Request, c store.Capsule, ec *envdclient.Client,
	path string, body io.Reader, opts envdclient.UploadOptions) error {
	if err := s.startUse(r.Context(), c); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	go s.keepActive(ctx, c)
	ub := &uploadBody{r: body}
	res, err := ec.Upload(ctx, path, ub, opts)
	if berr := ub.failed(); berr != nil {
		return errorf(codeInvalid, "the upload ended early: %v; the file was left as it was", berr)
	}
	if err != nil {
		return s.envdError(r.Context(), c, fileErrors, err)
	}
	s.used(r, c, "file.write", map[string]any{"path": res.Path, "size": res.Size})
	encode(w, http.StatusOK, res)
	return nil
}

func (s *server) handleWriteFile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "multipart/form-data" {
			return errorf(codeInvalid, "send multipart/form-data with a path field and then a file part")
		}
		mr, err := r.MultipartReader()
		if err != nil {
			return errorf(codeInvalid, "reading the multipart form: %v", err)
		}
		var (
			path string
			opts envdclient.UploadOptions
		)
		field := func(p io.Reader, name string, limit int) (string, error) {
			b, err := io.ReadAll(io.LimitReader(p, int64(limit)+1))
			if err != nil {
				return "", errorf(codeInvalid, "reading form field %s: %v", name, err)
			}
			if len(b) > limit {
				return "", errorf(codeInvalid, "form field %s is longer than %d bytes", name, limit)
			}
			return string(b), nil
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return errorf(codeInvalid, "the form has no file part")
			}
			if err != nil {
				return errorf(codeInvalid, "reading the multipart form: %v", err)
			}
			switch name := part.FormName(); name {
			case "path":
				if path, err = field(part, name, maxPathLen); err != nil {
					return err
				}
				if err := checkPath("path", path); err != nil {
					return err
				}
			case "mode":
				m, err := field(part, name, 16)
				if err != nil {
					return err
				}
				if opts.Mode, err = parseMode("mode", m); err != nil {
					return err
				}
			case "user":
				if opts.User, err = field(part, name, maxUserLen); err != nil {
					return err
				}
				if err := checkUser(opts.User); err != nil {
					return err
				}
			case "file":
				if path == "" {
					return errorf(codeInvalid, "the path field must come before the file part")
				}
				return s.upload(w, r, c, ec, path, part, opts)
			default:
				return errorf(codeInvalid, "unknown form field %q; send path, then optionally mode and user, then file", name)
			}
		}
	})
}

func (s *server) handlePutFile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		path := q.Get("path")
		if err := checkPath("path", path); err != nil {
			return err
		}
		opts := envdclient.UploadOptions{User: q.Get("user"), Size: r.ContentLength}
		if err := checkUser(opts.User); err != nil {
			return err
		}
		if q.Has("mode") {
			if opts.Mode, err = parseMode("mode", q.Get("mode")); err != nil {
				return err
			}
		}
		return s.upload(w, r, c, ec, path, r.Body, opts)
	})
}

// pathRequest is the body of the JSON file operations.
type pathRequest struct {
	Path string `json:"path"`
	User string `json:"user"`
}

func (p pathRequest) check() error {
	if err := checkPath("path", p.Path); err != nil {
		return err
	}
	return checkUser(p.User)
}

// download streams a file of c's to w, passing on envd's status and length
// headers; header's Range, if any, is passed to envd.
func (s *server) download(w http.ResponseWriter, r *http.Request, c store.Capsule, ec *envdclient.Client,
	path, user string, header http.Header) error {
	if err := s.startUse(r.Context(), c); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	resp, err := ec.Open(ctx, path, user, header)
	if err != nil {
		return s.envdError(r.Context(), c, fileErrors, err)
	}
	defer func() { _ = resp.Body.Close() }()
	s.used(r, c, "", nil)
	go s.keepActive(ctx, c)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	for _, k := range []string{"Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified"} {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.CopyBuffer(w, resp.Body, make([]byte, copyBuffer)); err != nil {
		// The status is sent: cut the connection so that the client sees
		// a broken transfer, not a short file.
		if r.Context().Err() == nil {
			s.log.WarnContext(r.Context(), "downloading a file", "capsule_id", c.ID, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *server) handleReadFile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		req, err := decode[pathRequest](w, r, maxBody)
		if err != nil {
			return err
		}
		if err := req.check(); err != nil {
			return err
		}
		return s.download(w, r, c, ec, req.Path, req.User, nil)
	})
}

func (s *server) handleGetFile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		req := pathRequest{Path: q.Get("path"), User: q.Get("user")}
		if err := req.check(); err != nil {
			return err
		}
		return s.download(w, r, c, ec, req.Path, req.User, r.Header)
	})
}

func (s *server) handleListFiles() http.Handler {
	type request struct {
		pathRequest
		Depth *int `json:"depth"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if err := req.check(); err != nil {
			return err
		}
		depth := 1
		if req.Depth != nil {
			depth = *req.Depth
		}
		if depth < 1 || depth > 64 {
			return errorf(codeInvalid, "depth must be between 1 and 64, not %d", depth)
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		resp, err := ec.Filesystem.ListDir(ctx, connect.NewRequest(&envdv1.ListDirRequest{
			Path: req.Path, Depth: uint32(depth), User: req.User,
		}))
		if err != nil {
			return s.envdError(r.Context(), c, fileErrors, err)
		}
		// Built entry by entry, so that a listing too large is refused
		// before it is held (see jsonList).
		const head, tail = `{"entries":`, `}`
		list := jsonList{limit: maxListingBytes - len(head) - len(tail)}
		for _, e := range resp.Msg.GetEntries() {
			ok, err := list.add(toEntryJSON(e))
			if err != nil {
				return err
			}
			if !ok {
				return errorf(codeTooLarge, "the listing of %s is larger than %d MiB as JSON; list a subdirectory or a smaller depth", req.Path, maxListingBytes>>20)
			}
		}
		s.used(r, c, "", nil)
		answerJSON(w, http.StatusOK, append(append([]byte(head), list.bytes()...), tail...))
		return nil
	})
}

func (s *server) handleMakeDir() http.Handler {
	type request struct {
		pathRequest
		Parents *bool  `json:"parents"`
		Mode    string `json:"mode"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if err := req.check(); err != nil {
			return err
		}
		// Like mkdir -p unless told otherwise: what SDKs expect.
		parents := req.Parents == nil || *req.Parents
		var mode uint32
		if req.Mode != "" {
			if mode, err = parseMode("mode", req.Mode); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		resp, err := ec.Filesystem.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{
			Path: req.Path, Parents: parents, Mode: mode, User: req.User,
		}))
		if err != nil {
			return s.envdError(r.Context(), c, fileErrors, err)
		}
		s.used(r, c, "file.mkdir", map[string]any{"path": resp.Msg.GetEntry().GetPath()})
		encode(w, http.StatusOK, toEntryJSON(resp.Msg.GetEntry()))
		return nil
	})
}

func (s *server) handleRemoveFile() http.Handler {
	type request struct {
		pathRequest
		Recursive *bool `json:"recursive"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if err := req.check(); err != nil {
			return err
		}
		// Like rm -r unless told otherwise: what SDKs expect of remove.
		recursive := req.Recursive == nil || *req.Recursive
		ctx, cancel := context.WithTimeout(r.Context(), removeTimeout)
		defer cancel()
		_, err = ec.Filesystem.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{
			Path: req.Path, Recursive: recursive, User: req.User,
		}))
		if err != nil {
			return s.envdError(r.Context(), c, fileErrors, err)
		}
		s.used(r, c, "file.remove", map[string]any{"path": req.Path, "recursive": recursive})
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

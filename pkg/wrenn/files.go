package wrenn

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// FileEntry is a file or directory in a capsule.
type FileEntry struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Type is "file", "directory", "symlink" or "other".
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode holds the permission bits.
	Mode          uint32    `json:"mode"`
	Permissions   string    `json:"permissions"`
	Owner         string    `json:"owner"`
	Group         string    `json:"group"`
	ModifiedAt    time.Time `json:"modified_at"`
	SymlinkTarget *string   `json:"symlink_target"`
}

// IsDir reports whether the entry is a directory.
func (e FileEntry) IsDir() bool { return e.Type == "directory" }

// FileMode returns Mode as an os.FileMode, with the directory bit.
func (e FileEntry) FileMode() os.FileMode {
	m := os.FileMode(e.Mode) & os.ModePerm
	if e.IsDir() {
		m |= os.ModeDir
	}
	return m
}

// WriteResult is the answer of a write or upload.
type WriteResult struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// FileOptions are the optional parts of a file call.
type FileOptions struct {
	// User picks whose permissions apply and who owns what is created
	// (default: the capsule's default user).
	User string
	// Mode is the new file's permission bits (0: 0644).
	Mode os.FileMode
}

// WriteFile writes data to path (replacing any file there atomically and
// making missing parent directories) through the multipart files/write
// route.
func (c *Client) WriteFile(ctx context.Context, capsuleID, path string, data []byte, opts FileOptions) (*WriteResult, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fields := [][2]string{{"path", path}}
	if opts.Mode != 0 {
		fields = append(fields, [2]string{"mode", strconv.FormatUint(uint64(opts.Mode.Perm()), 8)})
	}
	if opts.User != "" {
		fields = append(fields, [2]string{"user", opts.User})
	}
	for _, f := range fields { // path, mode and user must come before file
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	fw, err := mw.CreateFormFile("file", "file")
	if err != nil {
		return nil, err
	}
	_, _ = fw.Write(data)
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var out WriteResult
	err = c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/files/write"),
		body: &buf, size: int64(buf.Len()), contentType: mw.FormDataContentType()}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

type pathBody struct {
	Path string `json:"path"`
	User string `json:"user,omitempty"`
}

// ReadFile returns the whole content of a file. For large files use
// Download, which streams.
func (c *Client) ReadFile(ctx context.Context, capsuleID, path string, opts FileOptions) ([]byte, error) {
	res, err := c.send(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/files/read"),
		json: pathBody{path, opts.User}})
	if err != nil {
		return nil, err
	}
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("wrenn: reading %s: %w", path, err)
	}
	return b, nil
}

// ListFiles lists a directory's entries; depth 0 or 1 lists only its own,
// 2 also its subdirectories', up to 64. Symlinks are not followed.
func (c *Client) ListFiles(ctx context.Context, capsuleID, path string, depth int, opts FileOptions) ([]FileEntry, error) {
	body := struct {
		pathBody
		Depth int `json:"depth,omitempty"`
	}{pathBody{path, opts.User}, depth}
	var out struct {
		Entries []FileEntry `json:"entries"`
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/files/list"), json: body}, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// MakeDir makes a directory and its missing parents; an existing
// directory is fine. opts.Mode defaults to 0755.
func (c *Client) MakeDir(ctx context.Context, capsuleID, path string, opts FileOptions) (*FileEntry, error) {
	body := struct {
		pathBody
		Mode string `json:"mode,omitempty"`
	}{pathBody: pathBody{path, opts.User}}
	if opts.Mode != 0 {
		body.Mode = strconv.FormatUint(uint64(opts.Mode.Perm()), 8)
	}
	var out FileEntry
	if err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/files/mkdir"), json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Remove removes a file or a whole directory.
func (c *Client) Remove(ctx context.Context, capsuleID, path string, opts FileOptions) error {
	return c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/files/remove"),
		json: pathBody{path, opts.User}}, nil)
}

// Upload streams r to path with PUT /files?path=: nothing of r is held in
// memory beyond what is in flight. size is r's length when known (it is
// sent as Content-Length), else -1. A failed upload leaves the old file.
func (c *Client) Upload(ctx context.Context, capsuleID, path string, r io.Reader, size int64, opts FileOptions) (*WriteResult, error) {
	q := url.Values{"path": {path}}
	if opts.User != "" {
		q.Set("user", opts.User)
	}
	if opts.Mode != 0 {
		q.Set("mode", strconv.FormatUint(uint64(opts.Mode.Perm()), 8))
	}
	if r == nil {
		r = http.NoBody
	}
	if size == 0 {
		r = http.NoBody // Content-Length: 0, not chunked
	}
	var out WriteResult
	err := c.call(ctx, request{method: http.MethodPut, path: capsulePath(capsuleID, "/files"), query: q,
		body: io.NopCloser(r), size: size, contentType: "application/octet-stream"}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Download streams a file from the capsule: the caller reads and closes
// the returned body, whose Size is the file's length (-1 if unknown).
func (c *Client) Download(ctx context.Context, capsuleID, path string, opts FileOptions) (*Download, error) {
	q := url.Values{"path": {path}}
	if opts.User != "" {
		q.Set("user", opts.User)
	}
	res, err := c.send(ctx, request{method: http.MethodGet, path: capsulePath(capsuleID, "/files"), query: q}) //nolint:bodyclose // the caller closes the Download
	if err != nil {
		return nil, err
	}
	d := &Download{ReadCloser: res.Body, Size: res.ContentLength}
	if t, err := http.ParseTime(res.Header.Get("Last-Modified")); err == nil {
		d.ModifiedAt = t
	}
	return d, nil
}

// Download is a file being downloaded.
type Download struct {
	io.ReadCloser
	// Size is the file's length, -1 if the server did not say.
	Size int64
	// ModifiedAt is the file's modification time, if the server said.
	ModifiedAt time.Time
}

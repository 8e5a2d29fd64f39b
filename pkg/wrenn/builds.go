package wrenn

import (
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Build is a template build (see docs/templates.md).
type Build struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Public      bool       `json:"public"`
	Source      string     `json:"source"` // "image" or "recipe"
	Status      string     `json:"status"` // running, succeeded, failed, cancelled
	Error       string     `json:"error"`
	StepsTotal  int        `json:"steps_total"`
	StepsDone   int        `json:"steps_done"`
	CurrentStep string     `json:"current_step"`
	Progress    float64    `json:"progress"`
	TemplateID  *string    `json:"template_id"`
	SizeBytes   int64      `json:"size_bytes"`
	CreatedAt   time.Time  `json:"created_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	DurationMS  int64      `json:"duration_ms"`
}

// Done reports whether the build has ended.
func (b *Build) Done() bool { return b.Status != "running" }

// BuildLog is one line of a build's log.
type BuildLog struct {
	Seq    int64  `json:"seq"`
	Step   int    `json:"step"`
	Stream string `json:"stream"` // info, stdout or stderr
	Line   string `json:"line"`
}

// BuildFromRecipe starts a build of template name from recipe (the JSON
// recipe of docs/templates.md). It returns the build, running.
func (c *Client) BuildFromRecipe(ctx context.Context, name string, recipe json.RawMessage) (*Build, error) {
	body := struct {
		Name   string          `json:"name"`
		Recipe json.RawMessage `json:"recipe"`
	}{name, recipe}
	var out Build
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/templates", json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BuildFromRef starts a build of template name from image reference ref
// ("python:3.12-slim"), which the control plane pulls from a registry its
// operator allows. It returns the build, running.
func (c *Client) BuildFromRef(ctx context.Context, name, ref string) (*Build, error) {
	body := struct {
		Name  string `json:"name"`
		Image string `json:"image"`
	}{name, ref}
	var out Build
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/templates", json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BuildFromImage starts a build of template name from image, an OCI image
// layout or `docker save` archive (one tar file), streamed as it is read.
func (c *Client) BuildFromImage(ctx context.Context, name string, image io.Reader) (*Build, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField("name", name)
		if err == nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("image", "image.tar"); err == nil {
				_, err = io.Copy(fw, image)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		_ = pw.CloseWithError(err)
	}()
	var out Build
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/templates", body: pr, size: -1, contentType: mw.FormDataContentType()}, &out)
	_ = pr.Close()
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetBuild returns build id.
func (c *Client) GetBuild(ctx context.Context, id string) (*Build, error) {
	var out Build
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/templates/builds/" + url.PathEscape(id)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelBuild asks running build id to stop.
func (c *Client) CancelBuild(ctx context.Context, id string) (*Build, error) {
	var out Build
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/templates/builds/" + url.PathEscape(id) + "/cancel"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BuildLogs returns build id as it is now and its log lines after seq
// after.
func (c *Client) BuildLogs(ctx context.Context, id string, after int64) (*Build, []BuildLog, error) {
	var out struct {
		Build Build      `json:"build"`
		Logs  []BuildLog `json:"logs"`
	}
	q := url.Values{"follow": {"false"}, "after": {strconv.FormatInt(after, 10)}}
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/templates/builds/" + url.PathEscape(id) + "/logs", query: q}, &out); err != nil {
		return nil, nil, err
	}
	return &out.Build, out.Logs, nil
}

// FollowBuild calls line for every log line of build id, from its start,
// until the build ends, and returns it as it ended.
func (c *Client) FollowBuild(ctx context.Context, id string, line func(BuildLog)) (*Build, error) {
	var after int64
	for {
		b, lines, err := c.BuildLogs(ctx, id, after)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			line(l)
			after = l.Seq
		}
		// The build was read before its lines: once it is seen ended,
		// one more read has every line.
		if b.Done() {
			if _, rest, err := c.BuildLogs(ctx, id, after); err == nil {
				for _, l := range rest {
					line(l)
				}
			}
			return b, nil
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

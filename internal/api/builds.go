package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/wrenn-dev/wrenn/internal/builds"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// This file serves template builds (internal/builds): POST /v1/templates
// starts one, from an uploaded OCI image (multipart), an image file on the
// control plane's machine (platform admins) or a recipe (JSON); the build
// routes report it, stream its log (server-sent events) and cancel it.

// maxImageUpload bounds an uploaded image archive.
const maxImageUpload = 16 << 30

// maxRecipeBody bounds a recipe request (copy steps carry file contents).
const maxRecipeBody = 64 << 20

// buildLogPoll is how often a log stream looks for new lines.
const buildLogPoll = 200 * time.Millisecond

type buildJSON struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Public      bool            `json:"public"`
	Source      string          `json:"source"`
	Status      string          `json:"status"`
	Error       string          `json:"error"`
	StepsTotal  int             `json:"steps_total"`
	StepsDone   int             `json:"steps_done"`
	CurrentStep string          `json:"current_step"`
	Progress    float64         `json:"progress"`
	HostID      *string         `json:"host_id"`
	CapsuleID   *string         `json:"capsule_id"`
	TemplateID  *string         `json:"template_id"`
	SizeBytes   int64           `json:"size_bytes"`
	Recipe      json.RawMessage `json:"recipe"`
	CreatedAt   time.Time       `json:"created_at"`
	FinishedAt  *time.Time      `json:"finished_at"`
	DurationMS  int64           `json:"duration_ms"`
}

func toBuildJSON(b store.Build) buildJSON {
	j := buildJSON{ID: b.ID, Name: b.Name, Public: b.Public, Source: b.Source, Status: b.Status, Error: b.Error,
		StepsTotal: b.StepsTotal, StepsDone: b.StepsDone, CurrentStep: b.CurrentStep, HostID: ptr(b.HostID),
		CapsuleID: ptr(b.CapsuleID), TemplateID: ptr(b.TemplateID), SizeBytes: b.SizeBytes, Recipe: b.Recipe,
		CreatedAt: b.CreatedAt, FinishedAt: b.FinishedAt}
	if len(j.Recipe) == 0 {
		j.Recipe = json.RawMessage("null")
	}
	if b.StepsTotal > 0 {
		j.Progress = float64(b.StepsDone) / float64(b.StepsTotal)
	}
	if b.Status == store.BuildSucceeded {
		j.Progress = 1
	}
	end := time.Now()
	if b.FinishedAt != nil {
		end = *b.FinishedAt
	}
	j.DurationMS = end.Sub(b.CreatedAt).Milliseconds()
	return j
}

// newBuilds returns the build service, wired to this server's agent calls.
func (s *server) newBuilds(reapEvery, staleAfter time.Duration) *builds.Service {
	return builds.New(builds.Deps{
		Store: s.store, Logger: s.log.With("component", "builds"), Capsules: s.capsules, Agent: s.capsuleService,
		Envd: s.envdFor, Import: s.importOnAgent, ReapEvery: reapEvery, StaleAfter: staleAfter,
		Pull: s.pullImage,
	})
}

// pullImage is builds.Deps.Pull, through the operator's registry policy.
func (s *server) pullImage(ctx context.Context, ref, dst string, progress func(string)) (int64, error) {
	if s.pull == nil {
		return 0, errors.New("this control plane pulls no images")
	}
	r, err := s.pull.Parse(ref)
	if err != nil {
		return 0, err
	}
	return s.pull.Pull(ctx, r, dst, progress)
}

// importOnAgent streams body to host h's template import (see
// hostproto.TemplateImportPath) and returns its answer's body.
func (s *server) importOnAgent(ctx context.Context, h store.Host, name string, sizes [3]int, body io.Reader) (io.ReadCloser, error) {
	q := url.Values{"vcpus": {strconv.Itoa(sizes[0])}, "memory_mb": {strconv.Itoa(sizes[1])}, "disk_mb": {strconv.Itoa(sizes[2])}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, agentURL(h)+hostproto.TemplateImportPath(name)+"?"+q.Encode(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	// No overall timeout: an import takes as long as the image needs, and
	// the build's context ends it.
	c := &http.Client{
		Transport:     s.signer.Transport(h.ID, hostproto.TemplateImportProcedure(name), s.agents.client(h).Transport),
		CheckRedirect: noRedirects,
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("agent answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return resp.Body, nil
}

// buildError maps the build service's errors to the API's.
func buildError(err error) error {
	var be *builds.Error
	if !errors.As(err, &be) {
		return err
	}
	code := map[builds.Kind]string{
		builds.Invalid: codeInvalid, builds.NameTaken: codeNameTaken, builds.Conflict: codeConflict,
		builds.NotFound: codeNotFound, builds.NoHost: codeNoHost, builds.Forbidden: codeForbidden,
	}[be.Kind]
	if code == "" {
		code = codeInvalid
	}
	return &Error{Code: code, Message: be.Message}
}

// handleCreateTemplate starts a build. multipart/form-data uploads an
// image (part "image", after the fields name, public, vcpus, memory_mb,
// disk_mb); JSON names a recipe ({"name", "public", "recipe"}) or, for a
// platform admin, an image file on the control plane's machine
// ({"name", "public", "image_path"}).
func (s *server) handleCreateTemplate() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		var (
			b   store.Build
			err error
		)
		switch ct {
		case "multipart/form-data":
			b, err = s.startUpload(w, r, p)
		case "application/json", "":
			b, err = s.startFromJSON(w, r, p)
		case "application/yaml", "application/x-yaml", "text/yaml":
			if err := yamlAsJSON(w, r); err != nil {
				return err
			}
			b, err = s.startFromJSON(w, r, p)
		default:
			return errorf(codeInvalid, "Content-Type must be application/json or application/yaml (a recipe, an image reference or an image_path) or multipart/form-data (an image upload), not %q", ct)
		}
		if err != nil {
			return buildError(err)
		}
		w.Header().Set("Location", "/v1/templates/builds/"+b.ID)
		encode(w, http.StatusAccepted, toBuildJSON(b))
		return nil
	})
}

func (s *server) startFromJSON(w http.ResponseWriter, r *http.Request, p principal) (store.Build, error) {
	type request struct {
		Name      string          `json:"name"`
		Public    bool            `json:"public"`
		Recipe    json.RawMessage `json:"recipe"`
		ImagePath string          `json:"image_path"`
		Image     string          `json:"image"`
		VCPUs     int             `json:"vcpus"`
		MemoryMB  int             `json:"memory_mb"`
		DiskMB    int             `json:"disk_mb"`
	}
	req, err := decode[request](w, r, maxRecipeBody)
	if err != nil {
		return store.Build{}, err
	}
	if req.Public && !p.PlatformAdmin {
		return store.Build{}, errorf(codeForbidden, "only platform admins may build public templates")
	}
	breq := builds.Request{TeamID: p.TeamID, CreatedBy: p.UserID, Name: req.Name, Public: req.Public}
	sources := 0
	for _, given := range []bool{len(req.Recipe) > 0, req.ImagePath != "", req.Image != ""} {
		if given {
			sources++
		}
	}
	switch {
	case sources > 1:
		return store.Build{}, errorf(codeInvalid, "give one of recipe, image and image_path")
	case req.Image != "":
		if s.pull == nil {
			return store.Build{}, errorf(codeInvalid, "this control plane pulls no images; upload the image instead")
		}
		ref, err := s.pull.Parse(req.Image)
		if err != nil {
			return store.Build{}, errorf(codeInvalid, "image: %v", err)
		}
		return s.builds.StartImage(r.Context(), builds.ImageRequest{Request: breq, Ref: ref.Name(),
			VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB}, s.event(r, p, "template.build.start", nil))
	case len(req.Recipe) > 0:
		if req.VCPUs != 0 || req.MemoryMB != 0 || req.DiskMB != 0 {
			return store.Build{}, errorf(codeInvalid, "a recipe gives its sizes in recipe.vcpus, recipe.memory_mb and recipe.disk_mb")
		}
		recipe, err := builds.ParseRecipe(req.Recipe)
		if err != nil {
			return store.Build{}, err
		}
		return s.builds.StartRecipe(r.Context(), breq, recipe, s.event(r, p, "template.build.start", nil))
	case req.ImagePath != "":
		if !p.PlatformAdmin {
			return store.Build{}, errorf(codeForbidden, "only platform admins may build from a path on the control plane's machine; upload the image instead")
		}
		if !filepath.IsAbs(req.ImagePath) {
			return store.Build{}, errorf(codeInvalid, "image_path must be absolute, not %q", req.ImagePath)
		}
		if req.Name == "" {
			return store.Build{}, errorf(codeInvalid, "name is required")
		}
		// The build removes its archive when done: it gets a copy.
		src, err := os.Open(req.ImagePath)
		if err != nil {
			return store.Build{}, errorf(codeInvalid, "image_path: %v", err)
		}
		defer func() { _ = src.Close() }()
		if fi, err := src.Stat(); err != nil || !fi.Mode().IsRegular() {
			return store.Build{}, errorf(codeInvalid, "image_path %q is not a regular file", req.ImagePath)
		}
		staged, err := stage(src, maxImageUpload)
		if err != nil {
			return store.Build{}, err
		}
		if err := ociimage.Check(staged); err != nil {
			_ = os.Remove(staged)
			return store.Build{}, errorf(codeInvalid, "image_path: %v", err)
		}
		return s.builds.StartImage(r.Context(), builds.ImageRequest{Request: breq, Archive: staged,
			VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB}, s.event(r, p, "template.build.start", nil))
	default:
		return store.Build{}, errorf(codeInvalid, "give a recipe or an image reference (JSON), an image upload (multipart/form-data, part \"image\") or, as a platform admin, an image_path")
	}
}

// startUpload reads a multipart image upload: the fields first, then the
// part "image", streamed to a file (never held in memory).
func (s *server) startUpload(w http.ResponseWriter, r *http.Request, p principal) (store.Build, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxImageUpload+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		return store.Build{}, errorf(codeInvalid, "reading multipart body: %v", err)
	}
	fields := map[string]string{}
	staged := ""
	defer func() {
		if staged != "" {
			_ = os.Remove(staged)
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return store.Build{}, errorf(codeInvalid, "reading multipart body: %v", err)
		}
		name := part.FormName()
		switch name {
		case "name", "public", "vcpus", "memory_mb", "disk_mb":
			v, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				return store.Build{}, errorf(codeInvalid, "reading field %s: %v", name, err)
			}
			fields[name] = strings.TrimSpace(string(v))
		case "image":
			if staged != "" {
				return store.Build{}, errorf(codeInvalid, "one image per build")
			}
			staged, err = stage(part, maxImageUpload)
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return store.Build{}, errorf(codeTooLarge, "the image must be at most %d bytes", int64(maxImageUpload))
				}
				return store.Build{}, err
			}
		default:
			return store.Build{}, errorf(codeInvalid, "unknown form field %q (name, public, vcpus, memory_mb, disk_mb, image)", name)
		}
	}
	if staged == "" {
		return store.Build{}, errorf(codeInvalid, "the form has no part \"image\": the OCI image layout or docker save archive, as a tar file")
	}
	public := false
	if v, ok := fields["public"]; ok {
		public, err = strconv.ParseBool(v)
		if err != nil {
			return store.Build{}, errorf(codeInvalid, "public must be true or false, not %q", v)
		}
	}
	if public && !p.PlatformAdmin {
		return store.Build{}, errorf(codeForbidden, "only platform admins may build public templates")
	}
	sizes := [3]int{}
	for i, k := range []string{"vcpus", "memory_mb", "disk_mb"} {
		if v, ok := fields[k]; ok && v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return store.Build{}, errorf(codeInvalid, "%s must be an integer, not %q", k, v)
			}
			sizes[i] = n
		}
	}
	if err := ociimage.Check(staged); err != nil {
		return store.Build{}, errorf(codeInvalid, "image: %v", err)
	}
	archive := staged
	staged = "" // StartImage owns it now
	return s.builds.StartImage(r.Context(), builds.ImageRequest{
		Request: builds.Request{TeamID: p.TeamID, CreatedBy: p.UserID, Name: fields["name"], Public: public},
		Archive: archive, VCPUs: sizes[0], MemoryMB: sizes[1], DiskMB: sizes[2],
	}, s.event(r, p, "template.build.start", nil))
}

// stage copies src (at most limit bytes) to a new file in the temporary
// directory and returns its path.
func stage(src io.Reader, limit int64) (string, error) {
	f, err := os.CreateTemp("", "wrenn-image-*.tar")
	if err != nil {
		return "", fmt.Errorf("staging image: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(src, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = errorf(codeTooLarge, "the image must be at most %d bytes", limit)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// buildOf returns the caller's build named in the path, or a 404.
func (s *server) buildOf(r *http.Request) (store.Build, error) {
	id := r.PathValue("id")
	notFound := errorf(codeNotFound, "no build with id %q", id)
	u, err := uuid.Parse(id)
	if err != nil {
		return store.Build{}, notFound
	}
	b, err := s.store.Build(r.Context(), caller(r).TeamID, u.String())
	if errors.Is(err, store.ErrNotFound) {
		return store.Build{}, notFound
	}
	return b, err
}

func (s *server) handleListBuilds() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		bs, err := s.store.Builds(r.Context(), caller(r).TeamID, 50)
		if err != nil {
			return err
		}
		out := make([]buildJSON, 0, len(bs))
		for _, b := range bs {
			out = append(out, toBuildJSON(b))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func (s *server) handleGetBuild() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		b, err := s.buildOf(r)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toBuildJSON(b))
		return nil
	})
}

func (s *server) handleCancelBuild() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		b, err := s.builds.Cancel(r.Context(), p.TeamID, r.PathValue("id"), s.event(r, p, "template.build.cancel", nil))
		if err != nil {
			return buildError(err)
		}
		encode(w, http.StatusAccepted, toBuildJSON(b))
		return nil
	})
}

// handleBuildLogs streams a build's log as server-sent events, from the
// start (or after the seq in Last-Event-ID or ?after=): an event "log" per
// line (id: its seq), "status" whenever the build's progress changes, and
// "end" with the build once it finished and every line was sent. With
// ?follow=false, or Accept other than text/event-stream, it answers the
// lines so far as JSON instead.
func (s *server) handleBuildLogs() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		b, err := s.buildOf(r)
		if err != nil {
			return err
		}
		after := int64(0)
		for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
			if v == "" {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return errorf(codeInvalid, "after (or Last-Event-ID) must be a log seq, not %q", v)
			}
			after = n
		}
		if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") || r.URL.Query().Get("follow") == "false" {
			lines, err := s.store.BuildLogs(r.Context(), b.ID, after, 10000)
			if err != nil {
				return err
			}
			if lines == nil {
				lines = []store.BuildLog{}
			}
			encode(w, http.StatusOK, map[string]any{"build": toBuildJSON(b), "logs": lines})
			return nil
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		send := func(event, id string, v any) error {
			data, err := json.Marshal(v)
			if err != nil {
				return err
			}
			if id != "" {
				if _, err := fmt.Fprintf(w, "id: %s\n", id); err != nil {
					return err
				}
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
				return err
			}
			return rc.Flush()
		}
		ctx := r.Context()
		last := ""
		tick := time.NewTicker(buildLogPoll)
		defer tick.Stop()
		keepalive := time.Now()
		for {
			// The build first: once it is seen finished, the lines read
			// after it are all it will ever have.
			cur, err := s.store.Build(ctx, b.TeamID, b.ID)
			if err != nil {
				return nil // the client went away, or the build was deleted
			}
			for {
				lines, err := s.store.BuildLogs(ctx, b.ID, after, 500)
				if err != nil {
					return nil
				}
				for _, l := range lines {
					if err := send("log", strconv.FormatInt(l.Seq, 10), l); err != nil {
						return nil
					}
					after = l.Seq
				}
				if len(lines) < 500 {
					break
				}
			}
			j := toBuildJSON(cur)
			key := fmt.Sprintf("%s/%d/%s", j.Status, j.StepsDone, j.CurrentStep)
			if key != last {
				last = key
				if err := send("status", "", j); err != nil {
					return nil
				}
			}
			if cur.Status != store.BuildRunning {
				_ = send("end", "", j)
				return nil
			}
			if time.Since(keepalive) > 15*time.Second {
				keepalive = time.Now()
				if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
}

// yamlAsJSON replaces r's body, a YAML document (recipes are easier to
// write in YAML), with the same document in JSON, which the JSON path then
// checks as it checks any request. go.yaml.in/yaml refuses documents whose
// aliases would expand without bound.
func yamlAsJSON(w http.ResponseWriter, r *http.Request) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRecipeBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(codeTooLarge, "request body is larger than %d bytes", int64(maxRecipeBody))
		}
		return errorf(codeInvalid, "reading request body: %v", err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return errorf(codeInvalid, "request body is not YAML: %v", err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return errorf(codeInvalid, "request body must be a YAML mapping with string keys (name, recipe, …)")
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return errorf(codeInvalid, "request body cannot be read as JSON (keys must be strings): %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(js))
	return nil
}

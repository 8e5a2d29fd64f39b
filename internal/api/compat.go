package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// The compatible API: under /api, the routes, request bodies, answers and
// error codes that the published Wrenn Python SDK (PyPI `wrenn`, v0.1.2)
// sends and parses, so that it works against this server unmodified with
// WRENN_BASE_URL=https://<this server>/api. Its shapes differ from this
// API's own where both have the same path (a capsule list is a bare array
// there, a process list an object, a file's modified_at a Unix time, the
// terminal protocol is JSON only), so they cannot share paths; each
// handler here adapts the native one. internal/api/testdata holds the
// SDK's API description, which TestCompatOpenAPI holds openapi.yaml to.

// compatPrefix is where the compatible API is mounted.
const compatPrefix = "/api"

// compatDefaultTemplate is the template of a capsule created without one,
// as the SDK's API description says.
const compatDefaultTemplate = "minimal"

// isCompat reports whether r is a request to the compatible API.
func isCompat(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, compatPrefix+"/")
}

// compatCode is the SDK's name for error code code (its exception classes
// hang on these); codes it has no name for are passed on as they are.
func compatCode(code string) string {
	switch code {
	case codeUnauthenticated, codeInvalidCredentials:
		return "unauthorized"
	case codeCapsuleNotFound, codeTemplateNotFound, codeProcessNotFound, codeFileNotFound:
		return codeNotFound
	case codeCapsuleNotRunning:
		return "invalid_state"
	case codeNameTaken, codeFileExists, codeTemplateInUse, codeTemplateUnavailable:
		return codeConflict
	case codeNoHost, codeNoCapacity:
		return "host_unavailable"
	case codeCapsuleUnreachable:
		return codeAgentError
	case codeInternal:
		return "internal_error"
	}
	return code
}

// compatRoutes are the compatible API's routes; routeTable lists them.
func compatRoutes() []route {
	p := compatPrefix
	return []route{
		{"POST", p + "/v1/api-keys", member, (*server).compatCreateAPIKey},
		{"GET", p + "/v1/api-keys", member, (*server).compatListAPIKeys},
		{"DELETE", p + "/v1/api-keys/{id}", member, (*server).handleDeleteAPIKey},

		{"POST", p + "/v1/capsules", member, (*server).compatCreateCapsule},
		{"GET", p + "/v1/capsules", member, (*server).compatListCapsules},
		{"GET", p + "/v1/capsules/{id}", member, (*server).compatGetCapsule},
		{"DELETE", p + "/v1/capsules/{id}", member, (*server).handleDeleteCapsule},
		{"POST", p + "/v1/capsules/{id}/pause", member, (*server).compatPauseCapsule},
		{"POST", p + "/v1/capsules/{id}/resume", member, (*server).compatResumeCapsule},
		{"POST", p + "/v1/capsules/{id}/ping", member, (*server).compatPingCapsule},

		{"POST", p + "/v1/snapshots", member, (*server).compatCreateSnapshot},
		{"GET", p + "/v1/snapshots", member, (*server).compatListSnapshots},
		{"DELETE", p + "/v1/snapshots/{name}", member, (*server).handleDeleteSnapshot},

		{"POST", p + "/v1/capsules/{id}/exec", member, (*server).compatExec},
		{"GET", p + "/v1/capsules/{id}/exec/stream", member, (*server).compatExecStream},
		{"GET", p + "/v1/capsules/{id}/processes", member, (*server).compatListProcesses},
		{"DELETE", p + "/v1/capsules/{id}/processes/{selector}", member, (*server).handleKillProcess},
		{"GET", p + "/v1/capsules/{id}/processes/{selector}/stream", member, (*server).compatProcessStream},
		{"GET", p + "/v1/capsules/{id}/pty", member, (*server).compatPTY},

		{"POST", p + "/v1/capsules/{id}/files/write", member, (*server).compatWriteFile},
		{"POST", p + "/v1/capsules/{id}/files/stream/write", member, (*server).compatWriteFile},
		{"POST", p + "/v1/capsules/{id}/files/read", member, (*server).handleReadFile},
		{"POST", p + "/v1/capsules/{id}/files/stream/read", member, (*server).handleReadFile},
		{"POST", p + "/v1/capsules/{id}/files/list", member, (*server).compatListFiles},
		{"POST", p + "/v1/capsules/{id}/files/mkdir", member, (*server).compatMakeDir},
		{"POST", p + "/v1/capsules/{id}/files/remove", member, (*server).handleRemoveFile},
	}
}

// recording is a native handler's answer, kept to be reshaped.
type recording struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (rec *recording) Header() http.Header { return rec.header }

func (rec *recording) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

func (rec *recording) Write(b []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	return rec.body.Write(b)
}

// replay runs the native handler h on r and keeps its answer. Only for
// handlers whose answer is small JSON; a request body streams through.
func replay(h http.Handler, r *http.Request) *recording {
	rec := &recording{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

// failed copies an error answer to w (already in the compatible codes,
// see writeError) and reports whether it was one.
func (rec *recording) failed(w http.ResponseWriter) bool {
	if rec.status < 400 {
		return false
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
	return true
}

// decodeInto reads the recorded JSON answer into v.
func (rec *recording) decodeInto(v any) error {
	return json.Unmarshal(rec.body.Bytes(), v)
}

// reshape answers r with h's answer, or with edit of it (decoded into a T)
// when h succeeded.
func reshape[T any](s *server, h http.Handler, edit func(*http.Request, T) any) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		rec := replay(h, r)
		if rec.failed(w) {
			return nil
		}
		var v T
		if err := rec.decodeInto(&v); err != nil {
			return err
		}
		encode(w, rec.status, edit(r, v))
		return nil
	})
}

// rewriteBody lets edit change r's JSON object body, read up to limit, and
// hands the result on. A body that is not a JSON object is handed on as it
// was, for the native handler to refuse.
func rewriteBody(w http.ResponseWriter, r *http.Request, limit int64, edit func(map[string]any)) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errorf(codeTooLarge, "request body is larger than %d bytes", limit)
	}
	if err != nil {
		return errorf(codeInvalid, "reading the request body: %v", err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if len(bytes.TrimSpace(b)) == 0 {
		m = map[string]any{}
	} else if dec.Decode(&m) != nil || m == nil {
		m = nil
	}
	if m != nil {
		edit(m)
		if b, err = json.Marshal(m); err != nil {
			return err
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	return nil
}

// withBody adapts h so that edit first rewrites the JSON request body.
func (s *server) withBody(h http.Handler, limit int64, edit func(map[string]any)) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := rewriteBody(w, r, limit, edit); err != nil {
			return err
		}
		h.ServeHTTP(w, r)
		return nil
	})
}

// setDefault sets m[k] to v unless m has a non-null value for k.
func setDefault(m map[string]any, k string, v any) {
	if m[k] == nil {
		m[k] = v
	}
}

// compatStatus is the SDK's name for capsule status st. Its list has no
// pausing or resuming: a capsule on its way to paused is reported as
// paused, one on its way back as starting (not usable yet, soon running).
func compatStatus(st string) string {
	switch st {
	case store.CapsulePausing:
		return store.CapsulePaused
	case store.CapsuleResuming:
		return "starting"
	}
	return st
}

// compatCapsuleJSON is a capsule as the SDK's model reads it: this API's
// fields, with the status in the SDK's list and last_updated.
type compatCapsuleJSON struct {
	capsuleJSON
	Status      string    `json:"status"`
	LastUpdated time.Time `json:"last_updated"`
}

func toCompatCapsule(c capsuleJSON) compatCapsuleJSON {
	return compatCapsuleJSON{capsuleJSON: c, Status: compatStatus(c.Status), LastUpdated: c.UpdatedAt}
}

func (s *server) compatCreateCapsule() http.Handler {
	h := reshape(s, s.handleCreateCapsule(), func(_ *http.Request, c capsuleJSON) any { return toCompatCapsule(c) })
	return s.withBody(h, maxCapsuleBody, func(m map[string]any) { setDefault(m, "template", compatDefaultTemplate) })
}

func (s *server) compatGetCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCompatCapsule(toCapsuleJSON(c)))
		return nil
	})
}

// compatListCapsules answers all the team's capsules (filtered as the
// native list is, if asked), newest first, as one array.
func (s *server) compatListCapsules() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		f, err := capsuleFilter(r)
		if err != nil {
			return err
		}
		f.Limit = maxListLimit
		out := []compatCapsuleJSON{}
		for {
			cs, next, err := s.store.ListCapsules(r.Context(), caller(r).TeamID, f)
			if err != nil {
				return err
			}
			for _, c := range cs {
				out = append(out, toCompatCapsule(toCapsuleJSON(c)))
			}
			if next == nil {
				break
			}
			f.After = next
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func (s *server) compatPauseCapsule() http.Handler {
	return reshape(s, s.handlePauseCapsule(), func(_ *http.Request, c capsuleJSON) any { return toCompatCapsule(c) })
}

func (s *server) compatResumeCapsule() http.Handler {
	return reshape(s, s.handleResumeCapsule(), func(_ *http.Request, c capsuleJSON) any { return toCompatCapsule(c) })
}

// compatPingCapsule answers 204, without the capsule.
func (s *server) compatPingCapsule() http.Handler {
	h := s.handlePingCapsule()
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if rec := replay(h, r); !rec.failed(w) {
			w.WriteHeader(http.StatusNoContent)
		}
		return nil
	})
}

// compatTemplateJSON is a template as the SDK's model reads it: type for
// kind, and the default sizes as vcpus and memory_mb.
type compatTemplateJSON struct {
	templateJSON
	Type     string `json:"type"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memory_mb"`
}

func toCompatTemplate(t templateJSON) compatTemplateJSON {
	return compatTemplateJSON{templateJSON: t, Type: t.Kind, VCPUs: t.DefaultVCPUs, MemoryMB: t.DefaultMemoryMB}
}

// compatCreateSnapshot takes the SDK's body, {"sandbox_id", "name"?}, and
// ?overwrite=true, which deletes the team's snapshot of that name first.
// Without a name the snapshot gets one.
func (s *server) compatCreateSnapshot() http.Handler {
	create := reshape(s, s.handleCreateSnapshot(), func(_ *http.Request, t templateJSON) any { return toCompatTemplate(t) })
	del := s.handleDeleteSnapshot()
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		overwrite := false
		switch q.Get("overwrite") {
		case "true":
			overwrite = true
		case "", "false":
		default:
			return errorf(codeInvalid, "overwrite must be true or false, not %q", q.Get("overwrite"))
		}
		var name string
		err := rewriteBody(w, r, maxBody, func(m map[string]any) {
			if id, ok := m["sandbox_id"]; ok {
				delete(m, "sandbox_id")
				setDefault(m, "capsule_id", id)
			}
			setDefault(m, "name", randomTag("snapshot-"))
			name, _ = m["name"].(string)
		})
		if err != nil {
			return err
		}
		if overwrite && name != "" {
			dr := r.Clone(r.Context())
			dr.Method, dr.Body, dr.ContentLength = http.MethodDelete, http.NoBody, 0
			dr.SetPathValue("name", name)
			rec := replay(del, dr)
			if rec.status != http.StatusNotFound && rec.failed(w) {
				return nil
			}
		}
		create.ServeHTTP(w, r)
		return nil
	})
}

// compatListSnapshots lists the templates, of one kind with ?type=.
func (s *server) compatListSnapshots() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		kind := r.URL.Query().Get("type")
		if kind != "" && kind != store.TemplateBase && kind != store.TemplateSnapshot {
			return errorf(codeInvalid, "type must be %s or %s, not %q", store.TemplateBase, store.TemplateSnapshot, kind)
		}
		ts, err := s.store.Templates(r.Context(), caller(r).TeamID)
		if err != nil {
			return err
		}
		out := []compatTemplateJSON{}
		for _, t := range ts {
			if kind == "" || t.Kind == kind {
				out = append(out, toCompatTemplate(toTemplateJSON(t)))
			}
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// compatExec answers as the SDK reads it: the capsule's id and the command
// with both answers; output that is not UTF-8 base64-encoded, said by
// encoding; a background process always has a tag.
func (s *server) compatExec() http.Handler {
	type foreground struct {
		execResult
		SandboxID string `json:"sandbox_id"`
		Cmd       string `json:"cmd"`
		Encoding  string `json:"encoding"`
	}
	type background struct {
		SandboxID string `json:"sandbox_id"`
		Cmd       string `json:"cmd"`
		PID       uint32 `json:"pid"`
		Tag       string `json:"tag"`
	}
	return s.exec(execAnswers{
		foreground: func(c store.Capsule, spec processSpec, res execResult) any {
			out := foreground{execResult: res, SandboxID: c.ID, Cmd: spec.Cmd, Encoding: "utf-8"}
			if !utf8.ValidString(res.Stdout) || !utf8.ValidString(res.Stderr) {
				out.Encoding = "base64"
				out.Stdout = base64.StdEncoding.EncodeToString([]byte(res.Stdout))
				out.Stderr = base64.StdEncoding.EncodeToString([]byte(res.Stderr))
			}
			return out
		},
		background: func(c store.Capsule, spec processSpec, pid uint32) any {
			return background{SandboxID: c.ID, Cmd: spec.Cmd, PID: pid, Tag: spec.Tag}
		},
		tag: func() string { return randomTag("proc-") },
	})
}

// compatListProcesses answers the running processes, in an object.
func (s *server) compatListProcesses() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		ps, err := s.listProcesses(r, c)
		if err != nil {
			return err
		}
		s.used(r, c, "", nil)
		out := struct {
			Processes []processJSON `json:"processes"`
		}{Processes: []processJSON{}}
		for _, p := range ps {
			if p.Running {
				out.Processes = append(out.Processes, p)
			}
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// compatWriteFile is the multipart upload (streamed, as the native one)
// answering 204.
func (s *server) compatWriteFile() http.Handler {
	h := s.handleWriteFile()
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if rec := replay(h, r); !rec.failed(w) {
			w.WriteHeader(http.StatusNoContent)
		}
		return nil
	})
}

// compatEntryJSON is a directory entry with modified_at in Unix seconds,
// and no type for what is neither file, directory nor symlink (a socket, a
// device), which the SDK has no name for.
type compatEntryJSON struct {
	entryJSON
	Type       *string `json:"type"`
	ModifiedAt int64   `json:"modified_at"`
}

func toCompatEntry(e entryJSON) compatEntryJSON {
	out := compatEntryJSON{entryJSON: e, ModifiedAt: e.ModifiedAt.Unix()}
	if e.Type != "other" {
		out.Type = &e.Type
	}
	return out
}

// compatListFiles takes depth 0 (the SDK's "not recursive") as 1.
func (s *server) compatListFiles() http.Handler {
	type listing struct {
		Entries []entryJSON `json:"entries"`
	}
	h := reshape(s, s.handleListFiles(), func(_ *http.Request, l listing) any {
		out := struct {
			Entries []compatEntryJSON `json:"entries"`
		}{Entries: make([]compatEntryJSON, 0, len(l.Entries))}
		for _, e := range l.Entries {
			out.Entries = append(out.Entries, toCompatEntry(e))
		}
		return out
	})
	return s.withBody(h, maxBody, func(m map[string]any) {
		if d, ok := m["depth"].(json.Number); ok && d.String() == "0" {
			m["depth"] = 1
		}
	})
}

// compatMakeDir answers {"entry": ...}.
func (s *server) compatMakeDir() http.Handler {
	return reshape(s, s.handleMakeDir(), func(_ *http.Request, e entryJSON) any {
		return struct {
			Entry compatEntryJSON `json:"entry"`
		}{toCompatEntry(e)}
	})
}

// compatAPIKeyJSON is an API key as the SDK's model reads it.
type compatAPIKeyJSON struct {
	apiKeyJSON
	TeamID    string     `json:"team_id"`
	KeyPrefix string     `json:"key_prefix"`
	LastUsed  *time.Time `json:"last_used"`
}

func toCompatAPIKey(k apiKeyJSON, teamID string) compatAPIKeyJSON {
	return compatAPIKeyJSON{apiKeyJSON: k, TeamID: teamID, KeyPrefix: k.Prefix, LastUsed: k.LastUsedAt}
}

// compatCreateAPIKey names a key created without a name as the SDK's
// description says.
func (s *server) compatCreateAPIKey() http.Handler {
	h := reshape(s, s.handleCreateAPIKey(), func(r *http.Request, k apiKeyJSON) any { return toCompatAPIKey(k, caller(r).TeamID) })
	return s.withBody(h, maxBody, func(m map[string]any) { setDefault(m, "name", "Unnamed API Key") })
}

func (s *server) compatListAPIKeys() http.Handler {
	return reshape(s, s.handleListAPIKeys(), func(r *http.Request, ks []apiKeyJSON) any {
		out := make([]compatAPIKeyJSON, 0, len(ks))
		for _, k := range ks {
			out = append(out, toCompatAPIKey(k, caller(r).TeamID))
		}
		return out
	})
}

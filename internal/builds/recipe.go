package builds

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/rules"
)

// Bounds of a recipe.
const (
	maxSteps       = 100
	maxRunLen      = 16 << 10
	maxCopyBytes   = 4 << 20
	maxStepTimeout = 3600
	// defaultStepTimeout bounds a run step that names no timeout.
	defaultStepTimeout = 600
)

// Recipe is a template to build in a capsule: a base template and steps, a
// small subset of what a Dockerfile says (docs/templates.md).
type Recipe struct {
	// Base is the template the build capsule starts from (FROM).
	Base     string `json:"base"`
	VCPUs    int    `json:"vcpus,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"`
	DiskMB   int    `json:"disk_mb,omitempty"`
	Steps    []Step `json:"steps"`
}

// Step is one step of a recipe; exactly one of its fields is set.
type Step struct {
	// Run runs a shell line (RUN) as the current user, in the current
	// working directory, with the environment set so far; a non-zero exit
	// fails the build.
	Run        string `json:"run,omitempty"`
	TimeoutSec int    `json:"timeout_sec,omitempty"`
	// Copy writes a file (COPY of one file).
	Copy *Copy `json:"copy,omitempty"`
	// Env sets environment variables (ENV) for later steps and for every
	// capsule of the template.
	Env map[string]string `json:"env,omitempty"`
	// User is the account later steps run as (USER).
	User string `json:"user,omitempty"`
	// Workdir is the working directory of later steps (WORKDIR).
	Workdir string `json:"workdir,omitempty"`
	// Start is a shell line started in the background before the
	// snapshot (CMD): capsules of the template have it running.
	Start string `json:"start,omitempty"`
	// Expose records ports the template serves on (EXPOSE).
	Expose []int `json:"expose,omitempty"`
}

// Copy is a file to write into the build capsule.
type Copy struct {
	Path string `json:"path"`
	// Content is the file's text; ContentBase64 its bytes. One of them.
	Content       *string `json:"content,omitempty"`
	ContentBase64 *string `json:"content_base64,omitempty"`
	// Mode is the file's permission bits in octal ("0644", the default).
	Mode string `json:"mode,omitempty"`
	// User owns the file (default: the recipe's current user).
	User string `json:"user,omitempty"`
}

// invalid returns the error of a recipe that cannot be built.
func invalid(format string, args ...any) error {
	return &Error{Kind: Invalid, Message: fmt.Sprintf(format, args...)}
}

// ParseRecipe decodes and checks a recipe (JSON). Unknown fields are
// refused, so that a misspelt step is not silently skipped.
func ParseRecipe(b []byte) (Recipe, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Recipe
	if err := dec.Decode(&r); err != nil {
		return Recipe{}, invalid("recipe: %v", err)
	}
	if err := r.Check(); err != nil {
		return Recipe{}, err
	}
	return r, nil
}

// Check reports what makes r unbuildable, as an *Error of kind Invalid.
func (r Recipe) Check() error {
	switch {
	case r.Base == "":
		return invalid("recipe.base is required: the template the build starts from (GET /v1/templates lists them)")
	case !rules.ValidTemplateName(r.Base):
		return invalid("recipe.base %q is not a template name: %s", r.Base, rules.TemplateNameRule)
	case r.VCPUs < 0 || r.MemoryMB < 0 || r.DiskMB < 0:
		return invalid("recipe: vcpus, memory_mb and disk_mb must not be negative")
	case len(r.Steps) == 0:
		return invalid("recipe.steps is required: at least one step")
	case len(r.Steps) > maxSteps:
		return invalid("recipe.steps: at most %d steps, not %d", maxSteps, len(r.Steps))
	}
	for i, s := range r.Steps {
		if err := s.check(); err != nil {
			msg := err.Error()
			var e *Error
			if errors.As(err, &e) {
				msg = e.Message
			}
			return invalid("recipe.steps[%d]: %s", i, msg)
		}
	}
	return nil
}

func (s Step) check() error {
	set := 0
	for _, b := range []bool{s.Run != "", s.Copy != nil, s.Env != nil, s.User != "", s.Workdir != "", s.Start != "", s.Expose != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return invalid("a step has exactly one of run, copy, env, user, workdir, start, expose (it has %d)", set)
	}
	if s.TimeoutSec != 0 && (s.Run == "" || s.TimeoutSec < 1 || s.TimeoutSec > maxStepTimeout) {
		return invalid("timeout_sec goes with run and must be 1 to %d", maxStepTimeout)
	}
	for _, line := range []string{s.Run, s.Start} {
		if len(line) > maxRunLen || strings.ContainsRune(line, 0) {
			return invalid("a command must be at most %d bytes without NUL bytes", maxRunLen)
		}
	}
	switch {
	case s.Copy != nil:
		c := s.Copy
		if !absPath(c.Path) {
			return invalid("copy.path must be an absolute path, not %q", c.Path)
		}
		if (c.Content == nil) == (c.ContentBase64 == nil) {
			return invalid("copy takes exactly one of content and content_base64")
		}
		if _, err := c.bytes(); err != nil {
			return invalid("copy.content_base64: %v", err)
		}
		if b, _ := c.bytes(); len(b) > maxCopyBytes {
			return invalid("copy: at most %d bytes per file", maxCopyBytes)
		}
		if _, err := c.mode(); err != nil {
			return invalid("copy.mode must be octal permission bits such as 0644, not %q", c.Mode)
		}
		if c.User != "" && !validUser(c.User) {
			return invalid("copy.user %q is not a user name", c.User)
		}
	case s.Env != nil:
		if len(s.Env) == 0 {
			return invalid("env names at least one variable")
		}
		for k, v := range s.Env {
			if !rules.ValidEnvName(k) {
				return invalid("env: %q is not a variable name (%s)", k, rules.EnvNameRule)
			}
			if strings.ContainsRune(v, 0) {
				return invalid("env: the value of %s must not contain NUL bytes", k)
			}
		}
	case s.User != "":
		if !validUser(s.User) {
			return invalid("user %q is not a user name", s.User)
		}
	case s.Workdir != "":
		if !absPath(s.Workdir) {
			return invalid("workdir must be an absolute path, not %q", s.Workdir)
		}
	case s.Expose != nil:
		if len(s.Expose) == 0 {
			return invalid("expose names at least one port")
		}
		for _, p := range s.Expose {
			if p < 1 || p > 65535 {
				return invalid("expose: port %d is not 1 to 65535", p)
			}
		}
	}
	return nil
}

func absPath(p string) bool {
	return strings.HasPrefix(p, "/") && len(p) <= 4096 && !strings.ContainsRune(p, 0) && path.Clean(p) == p
}

func validUser(u string) bool {
	if len(u) == 0 || len(u) > 32 {
		return false
	}
	for _, r := range u {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

func (c Copy) bytes() ([]byte, error) {
	if c.Content != nil {
		return []byte(*c.Content), nil
	}
	if c.ContentBase64 == nil {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(*c.ContentBase64)
}

func (c Copy) mode() (uint32, error) {
	if c.Mode == "" {
		return 0o644, nil
	}
	n, err := strconv.ParseUint(c.Mode, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("bad mode %q", c.Mode)
	}
	return uint32(n), nil
}

// describe is a step as its log line names it, Dockerfile-like.
func (s Step) describe() string {
	switch {
	case s.Run != "":
		return "RUN " + oneLine(s.Run)
	case s.Copy != nil:
		return "COPY " + s.Copy.Path
	case s.Env != nil:
		keys := make([]string, 0, len(s.Env))
		for k := range s.Env {
			keys = append(keys, k)
		}
		return "ENV " + strings.Join(keys, " ")
	case s.User != "":
		return "USER " + s.User
	case s.Workdir != "":
		return "WORKDIR " + s.Workdir
	case s.Start != "":
		return "START " + oneLine(s.Start)
	case s.Expose != nil:
		ps := make([]string, len(s.Expose))
		for i, p := range s.Expose {
			ps[i] = strconv.Itoa(p)
		}
		return "EXPOSE " + strings.Join(ps, " ")
	}
	return "?"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

package builds

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRecipe(t *testing.T) {
	good := `{"base": "minimal", "memory_mb": 256, "steps": [
		{"env": {"A": "b"}}, {"workdir": "/srv"}, {"user": "user"},
		{"copy": {"path": "/srv/x", "content_base64": "aGk=", "mode": "0755"}},
		{"run": "make", "timeout_sec": 30}, {"start": "sleep 9"}, {"expose": [80, 443]}]}`
	r, err := ParseRecipe([]byte(good))
	if err != nil {
		t.Fatalf("ParseRecipe(good) = %v", err)
	}
	var got []string
	for _, s := range r.Steps {
		got = append(got, s.describe())
	}
	if want := "ENV A|WORKDIR /srv|USER user|COPY /srv/x|RUN make|START sleep 9|EXPOSE 80 443"; strings.Join(got, "|") != want {
		t.Errorf("steps = %q, want %q", strings.Join(got, "|"), want)
	}
	if b, _ := r.Steps[3].Copy.bytes(); string(b) != "hi" {
		t.Errorf("copy bytes = %q", b)
	}
	bad := map[string]string{
		"not JSON":        `{`,
		"unknown field":   `{"base": "minimal", "steps": [{"run": "x"}], "from": "y"}`,
		"unknown step":    `{"base": "minimal", "steps": [{"cmd": "x"}]}`,
		"no base":         `{"steps": [{"run": "x"}]}`,
		"bad base":        `{"base": "Bad Name", "steps": [{"run": "x"}]}`,
		"no steps":        `{"base": "minimal", "steps": []}`,
		"two in a step":   `{"base": "minimal", "steps": [{"run": "x", "user": "y"}]}`,
		"empty step":      `{"base": "minimal", "steps": [{}]}`,
		"timeout alone":   `{"base": "minimal", "steps": [{"timeout_sec": 5}]}`,
		"NUL":             `{"base": "minimal", "steps": [{"run": "a\u0000b"}]}`,
		"copy both":       `{"base": "minimal", "steps": [{"copy": {"path": "/x", "content": "a", "content_base64": "YQ=="}}]}`,
		"copy neither":    `{"base": "minimal", "steps": [{"copy": {"path": "/x"}}]}`,
		"copy dotdot":     `{"base": "minimal", "steps": [{"copy": {"path": "/a/../b", "content": "a"}}]}`,
		"mode too big":    `{"base": "minimal", "steps": [{"copy": {"path": "/x", "content": "a", "mode": "17777"}}]}`,
		"bad user":        `{"base": "minimal", "steps": [{"user": "a b"}]}`,
		"relative wd":     `{"base": "minimal", "steps": [{"workdir": "srv"}]}`,
		"empty env":       `{"base": "minimal", "steps": [{"env": {}}]}`,
		"empty expose":    `{"base": "minimal", "steps": [{"expose": []}]}`,
		"negative memory": `{"base": "minimal", "memory_mb": -1, "steps": [{"run": "x"}]}`,
	}
	for name, in := range bad {
		_, err := ParseRecipe([]byte(in))
		var e *Error
		if !errors.As(err, &e) || e.Kind != Invalid {
			t.Errorf("%s: ParseRecipe = %v, want an Invalid error", name, err)
		}
	}
}

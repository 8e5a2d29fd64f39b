package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTemplateMeta(t *testing.T) {
	dir := t.TempDir()
	c := &Capsules{cfg: CapsulesConfig{Dir: dir}}
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, "images", name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "images", name, "template.json"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("base", `{"name": "base", "default_vcpus": 1, "default_user": "user"}`)
	write("minimal", `{"name": "minimal", "default_vcpus": 1}`)
	write("evil", `{"default_user": "root:x:0"}`)
	write("broken", `{"default_user": `)
	for name, want := range map[string]string{"base": "user", "minimal": "", "absent": ""} {
		m, err := c.templateMeta(name)
		if err != nil || m.DefaultUser != want {
			t.Errorf("templateMeta(%s) = %+v, %v; want default user %q", name, m, err, want)
		}
	}
	for name, want := range map[string]string{"evil": "is not a user name", "broken": "template.json"} {
		if _, err := c.templateMeta(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("templateMeta(%s): %v, want an error saying %q", name, err, want)
		}
	}
}

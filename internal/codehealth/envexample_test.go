package codehealth

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEnvExampleListsEverySetting fails when a variable read by
// internal/config is missing from .env.example, or .env.example lists one
// that nothing reads.
func TestEnvExampleListsEverySetting(t *testing.T) {
	root := filepath.Join("..", "..")
	example, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(?:# )?([A-Z_]+)=`).FindAllStringSubmatch(string(example), -1) {
		listed[m[1]] = true
	}

	read := map[string]bool{}
	files, err := filepath.Glob(filepath.Join(root, "internal", "config", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`"((?:WRENN|DATABASE)_[A-Z_]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(src), -1) {
			read[m[1]] = true
		}
	}
	if len(read) < 5 {
		t.Fatalf("found only %d settings in internal/config; did the code move?", len(read))
	}
	for v := range read {
		if !listed[v] {
			t.Errorf("%s is read by internal/config but missing from .env.example", v)
		}
	}
	for v := range listed {
		if !read[v] && !strings.HasPrefix(v, "WRENN_DEV_") {
			t.Errorf(".env.example lists %s, which nothing in internal/config reads", v)
		}
	}
}

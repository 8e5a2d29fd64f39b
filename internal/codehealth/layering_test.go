package codehealth

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// importsOf returns, for each non-test Go file of the repository's package
// dir, the import paths it has.
func importsOf(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("%s: no Go files (moved? update this test)", dir)
	}
	out := map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			out[f] = append(out[f], path)
		}
	}
	return out
}

// TestAgentCoreKnowsNoDriver keeps the agent's core driver-neutral: only
// cmd/wrenn-agent (and test helpers) build a runtime driver; the capsule
// manager, its network and the control plane work on runtime.Driver.
func TestAgentCoreKnowsNoDriver(t *testing.T) {
	const drivers = "github.com/wrenn-dev/wrenn/internal/runtime/"
	for _, pkg := range []string{"internal/agent", "internal/network", "internal/api", "internal/lifecycle", "internal/store", "internal/hosts"} {
		for f, paths := range importsOf(t, pkg) {
			for _, path := range paths {
				if rest, ok := strings.CutPrefix(path, drivers); ok && rest != "" {
					t.Errorf("%s imports the driver package %s; drivers are built in cmd/wrenn-agent", f, path)
				}
			}
		}
	}
}

// TestCapsuleServiceKnowsNoHTTP keeps the control plane's capsule service
// reusable by other front ends (a CLI, a job runner): it speaks in store
// records and its own errors, and the REST API is the one that speaks HTTP.
func TestCapsuleServiceKnowsNoHTTP(t *testing.T) {
	for f, paths := range importsOf(t, "internal/lifecycle") {
		for _, path := range paths {
			if path == "net/http" || path == "github.com/wrenn-dev/wrenn/internal/api" {
				t.Errorf("%s imports %s; the capsule service is called by the API, not part of it", f, path)
			}
		}
	}
}

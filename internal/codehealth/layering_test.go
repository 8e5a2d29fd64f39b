package codehealth

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAgentCoreKnowsNoDriver keeps the agent's core driver-neutral: only
// cmd/wrenn-agent (and test helpers) build a runtime driver; the capsule
// manager, its network and the control plane work on runtime.Driver.
func TestAgentCoreKnowsNoDriver(t *testing.T) {
	root := filepath.Join("..", "..")
	const drivers = "github.com/wrenn-dev/wrenn/internal/runtime/"
	for _, pkg := range []string{"internal/agent", "internal/network", "internal/api", "internal/store", "internal/hosts"} {
		files, err := filepath.Glob(filepath.Join(root, pkg, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("%s: no Go files (moved? update this test)", pkg)
		}
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
				if rest, ok := strings.CutPrefix(path, drivers); ok && rest != "" {
					t.Errorf("%s imports the driver package %s; drivers are built in cmd/wrenn-agent", f, path)
				}
			}
		}
	}
}

package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// agentVersion is stamped into the binaries, so the test can see it travel
// from the agent to the control plane.
const agentVersion = "e2e-test"

// bin holds the paths of the binaries TestMain built.
var bin struct {
	cp, agent, envd string
}

// TestMain builds the three binaries once for every test in the package.
func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "wrenn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: creating build directory:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()

	build := func() ([]byte, error) {
		cmd := exec.Command("go", "build",
			"-ldflags", "-X github.com/wrenn-dev/wrenn/internal/version.Version="+agentVersion,
			"-o", dir+string(filepath.Separator),
			"github.com/wrenn-dev/wrenn/cmd/wrenn-cp",
			"github.com/wrenn-dev/wrenn/cmd/wrenn-agent",
			"github.com/wrenn-dev/wrenn/cmd/envd",
		)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd.CombinedOutput()
	}
	out, err := build()
	if err != nil {
		// Builds running at the same time in the same Go cache (other test
		// packages, an editor) occasionally fail with "could not import …
		// (open : no such file or directory)"; a real compile error fails
		// the second attempt too.
		fmt.Fprintf(os.Stderr, "e2e: building binaries failed, retrying once: %v\n%s", err, out)
		out, err = build()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building binaries: %v\n%s", err, out)
		return 1
	}
	bin.cp = filepath.Join(dir, "wrenn-cp")
	bin.agent = filepath.Join(dir, "wrenn-agent")
	bin.envd = filepath.Join(dir, "envd")
	return m.Run()
}

package api_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// TestImageRefBuildStack builds a template from an image reference: the
// control plane pulls it from a registry (go-containerregistry's own
// server, on loopback, allowed for this stack), and the template's files
// are the image's, on disk and in a capsule. References to registries the
// operator did not allow are refused before anything starts.
func TestImageRefBuildStack(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, images := stacktest.Env(t)
	img := ocitest.Image(t, append([]v1.Layer{ocitest.BusyboxLayer(t, filepath.Join(images, "minimal", "rootfs"))}, ocitest.Layers(t)...)...)
	ref, err := name.ParseReference(addr + "/wrenn/ocitest:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	st := startStack(t, stacktest.Options{ColdStarts: true, ControlPlane: func(c *config.ControlPlane) {
		c.ImageRegistries = []string{"http://" + addr, "ghcr.io"}
		c.ImageRegistryCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})

	for what, body := range map[string]map[string]any{
		"a registry not allowed": {"name": "nope", "image": "quay.io/some/image:1"},
		"no reference":           {"name": "nope", "image": "Not A Ref!"},
		"image and recipe":       {"name": "nope", "image": addr + "/wrenn/ocitest:v1", "recipe": map[string]any{"base": "minimal"}},
	} {
		a := teamCall(t, st, st.Team, "POST", "/v1/templates", body)
		a.wantError(t, what, http.StatusBadRequest, "invalid_request")
	}

	a := teamCall(t, st, st.Team, "POST", "/v1/templates", map[string]any{"name": "pulled", "image": addr + "/wrenn/ocitest:v1", "memory_mb": 256}).
		want(t, "build from a reference", http.StatusAccepted)
	w := follow(t, st, st.Team, a.str("id"), 2*time.Minute, nil)
	if w.end.Status != "succeeded" || w.end.TemplateID == nil || w.end.Progress != 1 {
		t.Fatalf("build ended %+v; log:\n%s", w.end, w.text())
	}
	for _, want := range []string{"step 1/4: pull " + addr + "/wrenn/ocitest:v1", "pulling", "step 4/4", "layer 3/3"} {
		if !strings.Contains(w.text(), want) {
			t.Errorf("log lacks %q:\n%s", want, w.text())
		}
	}
	ocitest.Check(t, filepath.Join(st.AgentConfig.Dir, "images", *w.end.TemplateID, "rootfs"))
	c := createFrom(t, st, map[string]any{"template": "pulled"}).want(t, "capsule from the pulled template", http.StatusCreated)
	cc := &capsuleClient{t: t, st: st, tm: st.Team, id: c.str("id")}
	if out := cc.sh("stat -c '%n %a %u' /data/suid; cat /data/keep"); !strings.HasPrefix(out, "/data/suid 4755 1000\n") {
		t.Errorf("inside the capsule: %q", out)
	}
	cc.call("DELETE", "", nil).want(t, "destroy", http.StatusNoContent)
	deleteSnapshot(t, st, "pulled").want(t, "delete template", http.StatusNoContent)
}

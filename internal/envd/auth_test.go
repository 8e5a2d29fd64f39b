package envd_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// protectedRoutes is every route that needs the token: all RPC procedures and
// the HTTP routes other than /health and /init.
func protectedRoutes(dir string) []struct{ method, path string } {
	routes := []struct{ method, path string }{
		{http.MethodGet, "/files?path=/etc/hostname"},
		{http.MethodPost, "/files?path=" + dir + "/upload"},
		{http.MethodGet, "/metrics"},
		{http.MethodPost, "/prepare-pause"},
	}
	for _, svc := range []protoreflect.ServiceDescriptor{envdv1.File_envd_v1_process_proto.Services().Get(0), envdv1.File_envd_v1_filesystem_proto.Services().Get(0)} {
		for i := 0; i < svc.Methods().Len(); i++ {
			m := svc.Methods().Get(i)
			routes = append(routes, struct{ method, path string }{http.MethodPost, "/" + string(svc.FullName()) + "/" + string(m.Name())})
		}
	}
	return routes
}

func TestEveryRouteNeedsTheToken(t *testing.T) {
	in := newEnvd(t)
	routes := protectedRoutes(t.TempDir())
	if len(routes) != 4+8+6 {
		t.Fatalf("found %d routes, want 18 (update the test with the API)", len(routes))
	}
	for _, token := range []string{"", "wrong-token", in.Token + "x", strings.ToUpper(in.Token)} {
		for _, rt := range routes {
			t.Run(rt.method+" "+rt.path+" token="+token, func(t *testing.T) {
				req, err := http.NewRequest(rt.method, in.URL+rt.path, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				if token != "" {
					req.Header.Set(envdclient.TokenHeader, token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("status = %d, want 401", resp.StatusCode)
				}
			})
		}
	}
	// With the right token the same routes answer something other than 401.
	for _, rt := range routes {
		req, _ := http.NewRequest(rt.method, in.URL+rt.path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(envdclient.TokenHeader, in.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			t.Errorf("%s %s with the token: 401", rt.method, rt.path)
		}
	}
}

func TestClientGetsUnauthenticated(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	bad := envdclient.New(in.URL, "wrong")
	defer bad.Close()
	checks := map[string]func() error{
		"Start": func() error {
			s, err := bad.Process.Start(ctx, connect.NewRequest(cmd("true")))
			if err == nil {
				s.Receive()
				err = s.Err()
			}
			return err
		},
		"List": func() error {
			_, err := bad.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{}))
			return err
		},
		"StreamInput": func() error {
			s := bad.Process.StreamInput(ctx)
			_ = s.Send(&envdv1.StreamInputRequest{Data: []byte("x")}) // the answer carries the error
			_, err := s.CloseAndReceive()
			return err
		},
		"Watch": func() error {
			s, err := bad.Filesystem.Watch(ctx, connect.NewRequest(&envdv1.WatchRequest{Path: "/tmp"}))
			if err == nil {
				s.Receive()
				err = s.Err()
			}
			return err
		},
		"Stat": func() error {
			_, err := bad.Filesystem.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: "/"}))
			return err
		},
	}
	for name, call := range checks {
		if got := connect.CodeOf(call()); got != connect.CodeUnauthenticated {
			t.Errorf("%s: code %v, want unauthenticated", name, got)
		}
	}
	var e *envdclient.Error
	if _, err := bad.Metrics(ctx); !errors.As(err, &e) || e.Status != 401 || e.Code != "unauthenticated" {
		t.Errorf("metrics with a wrong token: %v, want 401 unauthenticated", err)
	}
}

func TestInitOnceThenOnlyWithToken(t *testing.T) {
	in := startEnvd(t, nil)
	ctx := context.Background()
	c := in.Client

	// Before /init: health answers, everything else is refused.
	if err := c.Health(ctx); err != nil {
		t.Fatalf("health before init: %v", err)
	}
	if _, err := c.Metrics(ctx); !isStatus(err, 401) {
		t.Errorf("metrics before init: %v, want 401", err)
	}
	if err := c.Init(ctx, envdclient.InitRequest{}); !isStatus(err, 400) {
		t.Errorf("init without a token: %v, want 400", err)
	}
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "t1", DefaultUser: "no-such-user"}); !isStatus(err, 400) {
		t.Errorf("init with an unknown user: %v, want 400", err)
	}
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "t1", EnvVars: map[string]string{"A=B": "c"}}); !isStatus(err, 400) {
		t.Errorf("init with a bad variable name: %v, want 400", err)
	}
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "t1", EnvVars: map[string]string{"GREETING": "hello"}, DefaultWorkdir: "/"}); err != nil {
		t.Fatalf("first init: %v", err)
	}

	// Second /init without the token, or with a wrong one, is refused.
	anon := envdclient.New(in.URL, "")
	defer anon.Close()
	if err := anon.Init(ctx, envdclient.InitRequest{AccessToken: "stolen"}); !isStatus(err, 401) {
		t.Errorf("second init without token: %v, want 401", err)
	}
	wrong := envdclient.New(in.URL, "t2")
	defer wrong.Close()
	if err := wrong.Init(ctx, envdclient.InitRequest{AccessToken: "stolen"}); !isStatus(err, 401) {
		t.Errorf("second init with a wrong token: %v, want 401", err)
	}
	// The defaults apply to processes.
	in.Client.SetToken("t1")
	if r := in.run(t, shell(`echo "$GREETING $PWD"`)); r.stdout.String() != "hello /\n" {
		t.Errorf("defaults from init: %q, want %q", r.stdout.String(), "hello /\n")
	}

	// With the token, /init rotates it: the old one stops working.
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "t2"}); err != nil {
		t.Fatalf("re-init with token: %v", err)
	}
	old := envdclient.New(in.URL, "t1")
	defer old.Close()
	if _, err := old.Metrics(ctx); !isStatus(err, 401) {
		t.Errorf("old token after rotation: %v, want 401", err)
	}
	if _, err := c.Metrics(ctx); err != nil {
		t.Errorf("new token: %v", err)
	}
}

func isStatus(err error, status int) bool {
	var e *envdclient.Error
	return errors.As(err, &e) && e.Status == status
}

func TestInitDefaultUserAppliesEverywhere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: envd can run processes and own files as the default user nobody only when it runs as root")
	}
	in := startEnvd(t, nil)
	ctx := context.Background()
	if err := in.Client.Init(ctx, envdclient.InitRequest{AccessToken: "t", DefaultUser: "nobody"}); err != nil {
		t.Fatal(err)
	}
	if r := in.run(t, cmd("id", "-un")); r.stdout.String() != "nobody\n" {
		t.Errorf("process user = %q, want nobody", r.stdout.String())
	}
	dir := sharedDir(t)
	if _, err := in.Client.Upload(ctx, dir+"/f", strings.NewReader("x"), envdclient.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := in.Client.Filesystem.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: dir + "/f"}))
	if err != nil || st.Msg.Entry.Owner != "nobody" {
		t.Errorf("uploaded file: %v, %v; want owned by nobody", st.Msg.GetEntry(), err)
	}
	// nobody may not read root's private files.
	if _, err := in.Client.Download(ctx, "/etc/shadow", ""); !isStatus(err, 403) {
		t.Errorf("nobody reading /etc/shadow: %v, want 403", err)
	}
	// An explicit user still wins.
	req := cmd("id", "-un")
	req.Process.User = "root"
	if r := in.run(t, req); r.stdout.String() != "root\n" {
		t.Errorf("explicit root: %q", r.stdout.String())
	}
}

package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// TestBaseTemplateStack runs a real capsule of the base template: the
// languages and tools it promises work, its calls run as `user` (uid 1000)
// unless a call asks for root, files written land owned by user, and its
// terminal is bash as user. A minimal capsule on the same host still runs
// as root: the default user comes from the template.
func TestBaseTemplateStack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Templates: []string{"minimal", "base"}, ColdStarts: true})
	var c struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	st.Team.JSON(t, st, "POST", "/v1/capsules", map[string]any{"template": "base"}, http.StatusCreated, &c)
	cc := &capsuleClient{t: t, st: st, tm: st.Team, id: c.ID}

	t.Run("tools", func(t *testing.T) {
		for _, tc := range []struct{ line, want string }{
			{"id -u", "1000\n"},
			{"id -un; echo $HOME; pwd", "user\n/home/user\n/home/user\n"},
			{"python3 -c 'print(6*7)'", "42\n"},
			{"node -e 'console.log(6*7)'", "42\n"},
			{"git --version", "git version 2."},
			{"sudo -n true && sudo -n id -u", "0\n"},
			{"bash -c 'echo $BASH_VERSION'", "5."},
			{"python3 -m venv /tmp/v && /tmp/v/bin/pip --version", "pip "},
			{"npm --version", ""},
			{"curl --version", "curl "},
			{"ps -o comm= -p 1", "envd\n"},
		} {
			out := cc.sh(tc.line)
			if !strings.HasPrefix(out, tc.want) {
				t.Errorf("%s: stdout %q, want it to start with %q", tc.line, out, tc.want)
			}
		}
	})

	t.Run("root per call", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "id -u; echo $HOME", "user": "root"}).want(t, "exec as root", http.StatusOK)
		if got := a.str("stdout"); got != "0\n/root\n" {
			t.Errorf("as root: stdout %q, want \"0\\n/root\\n\"", got)
		}
	})

	t.Run("files are the user's", func(t *testing.T) {
		ct, body := multipartBody(t, "path", "/home/user/hello.txt", "file", "hello")
		cc.raw("POST", "/files/write", ct, body).want(t, "write", http.StatusOK)
		if got := cc.sh("stat -c %U:%G:%a /home/user/hello.txt && cat /home/user/hello.txt"); got != "user:user:644\nhello" {
			t.Errorf("written file: %q, want user:user:644 and its content", got)
		}
		// The default user may not write where only root may.
		a := cc.call("POST", "/files/mkdir", map[string]any{"path": "/etc/wrenn-test"})
		if a.status < 400 || a.status >= 500 {
			t.Errorf("mkdir /etc/wrenn-test as user: %d %s, want a 4xx", a.status, a.raw)
		}
		cc.call("POST", "/files/mkdir", map[string]any{"path": "/etc/wrenn-test", "user": "root"}).want(t, "mkdir as root", http.StatusOK)
		if got := cc.sh("stat -c %U /etc/wrenn-test"); got != "root\n" {
			t.Errorf("directory made as root belongs to %q", got)
		}
	})

	t.Run("terminal is bash as user", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/pty")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		if m := readMsg(t, ctx, conn); m.Type != "start" {
			t.Fatalf("first message %+v", m)
		}
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("echo \"sh=${BASH_VERSINFO:-none} $(id -un) $SHELL\"\n")); err != nil {
			t.Fatal(err)
		}
		readUntil(t, ctx, conn, "sh=5 user /bin/bash\r\n")
	})

	t.Run("minimal stays root", func(t *testing.T) {
		mc := newCapsuleClient(t, st)
		if got := mc.sh("id -u"); got != "0\n" {
			t.Errorf("minimal: id -u = %q, want 0", got)
		}
	})
}

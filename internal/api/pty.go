package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/coder/websocket"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// Terminal sizes.
const (
	defaultPTYCols = 80
	defaultPTYRows = 24
	maxPTYSide     = 10000 // envd's bound
)

// checkPTYSize refuses sizes envd would refuse.
func checkPTYSize(cols, rows uint32) error {
	if cols < 1 || rows < 1 || cols > maxPTYSide || rows > maxPTYSide {
		return errorf(codeInvalid, "cols and rows must be between 1 and %d, not %dx%d", maxPTYSide, cols, rows)
	}
	return nil
}

// ptyQuery reads /pty's query: the terminal size and what to run in it.
func ptyQuery(r *http.Request) (*envdv1.StartRequest, processSpec, error) {
	q := r.URL.Query()
	size := func(name string, def uint32) (uint32, error) {
		if !q.Has(name) {
			return def, nil
		}
		n, err := strconv.ParseUint(q.Get(name), 10, 32)
		if err != nil {
			return 0, errorf(codeInvalid, "%s must be an integer between 1 and %d, not %q", name, maxPTYSide, q.Get(name))
		}
		return uint32(n), nil
	}
	cols, err := size("cols", defaultPTYCols)
	if err != nil {
		return nil, processSpec{}, err
	}
	rows, err := size("rows", defaultPTYRows)
	if err != nil {
		return nil, processSpec{}, err
	}
	if err := checkPTYSize(cols, rows); err != nil {
		return nil, processSpec{}, err
	}
	// Without cmd: the user's login shell (/bin/sh -l for an envd that
	// cannot pick it). With it: a shell line.
	spec := processSpec{Cmd: "/bin/sh", Args: []string{"-l"}, Cwd: q.Get("cwd"), User: q.Get("user")}
	if q.Has("cmd") {
		spec.Cmd, spec.Args = q.Get("cmd"), nil
	}
	cfg, err := spec.config()
	if err != nil {
		return nil, processSpec{}, err
	}
	cfg.LoginShell = !q.Has("cmd")
	return &envdv1.StartRequest{Process: cfg, Pty: &envdv1.Pty{Cols: cols, Rows: rows}}, spec, nil
}

func (s *server) handlePTY() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		req, spec, err := ptyQuery(r)
		if err != nil {
			return err
		}
		if err := checkUpgrade(r); err != nil {
			return err
		}
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		if err := s.startUse(r.Context(), c); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		// Started before the upgrade, so that a bad cwd or user is a plain
		// HTTP error.
		ps, start, err := startProcess(ctx, ec, req)
		if err != nil {
			return s.envdError(r.Context(), c, execErrors, err)
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			s.kill(ec, start.GetPid())
			_ = ps.close()
			return nil // Accept has answered
		}
		defer func() { _ = conn.CloseNow() }()
		conn.SetReadLimit(maxWSMessage)
		meta := execMeta(spec, "pty")
		meta["pid"] = start.GetPid()
		s.used(r, c, "capsule.exec", meta)
		ss := &session{s: s, conn: conn, ec: ec, c: c, pid: start.GetPid(), pty: true}
		if ss.send(ctx, wsMessage{Type: "start", PID: start.GetPid()}) != nil {
			s.kill(ec, start.GetPid())
			_ = ps.close()
			return nil
		}
		ss.run(ctx, cancel, ps, true)
		return nil
	})
}

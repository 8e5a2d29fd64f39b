package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// processJSON is a process envd knows: running, or finished within the
// last ten minutes.
type processJSON struct {
	PID      uint32   `json:"pid"`
	Tag      *string  `json:"tag"`
	Cmd      string   `json:"cmd"`
	Args     []string `json:"args"`
	PTY      bool     `json:"pty"`
	Running  bool     `json:"running"`
	ExitCode *int32   `json:"exit_code"`
	Signal   *string  `json:"signal"`
}

func (s *server) handleListProcesses() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		out, err := s.listProcesses(r, c)
		if err != nil {
			return err
		}
		s.used(r, c, "", nil)
		encode(w, http.StatusOK, out)
		return nil
	})
}

// parseSignal reads a signal name as SIGTERM, TERM or term; the allowed
// ones are those envd forwards.
func parseSignal(name string) (envdv1.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if v, ok := envdv1.Signal_value["SIGNAL_"+n]; ok && v != 0 {
		return envdv1.Signal(v), nil
	}
	return 0, errorf(codeInvalid, "unknown signal %q; use one of SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM, SIGCONT, SIGSTOP", name)
}

// signalName is the SIGxxx name of sig.
func signalName(sig envdv1.Signal) string {
	return strings.TrimPrefix(sig.String(), "SIGNAL_")
}

// processSelector reads a {selector} path value: a pid (digits) or a
// tag. An impossible one names no process.
func processSelector(r *http.Request) (*envdv1.ProcessSelector, error) {
	v := r.PathValue("selector")
	if v != "" && strings.Trim(v, "0123456789") == "" {
		pid, err := strconv.ParseUint(v, 10, 32)
		if err != nil || pid == 0 {
			return nil, errorf(codeProcessNotFound, "no process with pid %q", v)
		}
		return pidSelector(uint32(pid)), nil
	}
	if v == "" || checkText("tag", v, maxTagLen) != nil {
		return nil, errorf(codeProcessNotFound, "no process with tag %q", v)
	}
	return &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: v}}, nil
}

// is reports whether p is the process sel names.
func (p processJSON) is(sel *envdv1.ProcessSelector) bool {
	if pid, ok := sel.GetSelector().(*envdv1.ProcessSelector_Pid); ok {
		return p.PID == pid.Pid
	}
	return p.Tag != nil && *p.Tag == sel.GetTag()
}

// describe names what sel selects, for messages.
func describe(sel *envdv1.ProcessSelector) string {
	if pid, ok := sel.GetSelector().(*envdv1.ProcessSelector_Pid); ok {
		return "pid " + strconv.FormatUint(uint64(pid.Pid), 10)
	}
	return "tag " + strconv.Quote(sel.GetTag())
}

// listProcesses returns the processes of capsule c that envd knows, for
// every API that lists them: a list larger than maxListingBytes as JSON
// (envd's strings may grow sixfold when escaped) is refused.
func (s *server) listProcesses(r *http.Request, c store.Capsule) ([]processJSON, error) {
	ec, err := s.capsuleEnvd(r.Context(), c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
	defer cancel()
	resp, err := ec.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{}))
	if err != nil {
		return nil, s.envdError(r.Context(), c, processErrors, err)
	}
	out := make([]processJSON, 0, len(resp.Msg.GetProcesses()))
	size := 2 // the brackets
	for _, p := range resp.Msg.GetProcesses() {
		pj := toProcessJSON(p)
		b, err := json.Marshal(pj)
		if err != nil {
			return nil, err
		}
		if size += len(b) + 1; size > maxListingBytes {
			return nil, errorf(codeTooLarge, "the process list is larger than %d MiB as JSON", maxListingBytes>>20)
		}
		out = append(out, pj)
	}
	return out, nil
}

func toProcessJSON(p *envdv1.ProcessInfo) processJSON {
	pj := processJSON{PID: p.GetPid(), Tag: ptr(p.GetTag()), Cmd: p.GetCmd(), Args: p.GetArgs(),
		PTY: p.GetPty(), Running: p.GetRunning()}
	if pj.Args == nil {
		pj.Args = []string{}
	}
	if !p.GetRunning() {
		code := p.GetExitCode()
		pj.ExitCode, pj.Signal = &code, ptr(p.GetSignal())
	}
	return pj
}

func (s *server) handleGetProcess() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		sel, err := processSelector(r)
		if err != nil {
			return err
		}
		ps, err := s.listProcesses(r, c)
		if err != nil {
			return err
		}
		s.used(r, c, "", nil)
		// A running process wins over an ended one that had the same tag.
		var found *processJSON
		for i, p := range ps {
			if p.is(sel) && (found == nil || p.Running) {
				found = &ps[i]
			}
		}
		if found == nil {
			return errorf(codeProcessNotFound, "no process with %s", describe(sel))
		}
		encode(w, http.StatusOK, found)
		return nil
	})
}

func (s *server) handleKillProcess() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		sel, err := processSelector(r)
		if err != nil {
			return err
		}
		sig := envdv1.Signal_SIGNAL_SIGKILL
		if q := r.URL.Query(); q.Has("signal") {
			if sig, err = parseSignal(q.Get("signal")); err != nil {
				return err
			}
		}
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		_, err = ec.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{
			Process: sel, Signal: sig,
		}))
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		meta := map[string]any{"signal": signalName(sig)}
		if pid, ok := sel.GetSelector().(*envdv1.ProcessSelector_Pid); ok {
			meta["pid"] = pid.Pid
		} else {
			meta["tag"] = sel.GetTag()
		}
		s.used(r, c, "process.kill", meta)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// handleProcessStream is /exec/stream attached to the process {selector}
// (as ?pid= or ?tag= there).
func (s *server) handleProcessStream() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		sel, err := processSelector(r)
		if err != nil {
			return err
		}
		return s.execStream(w, r, sel, nil)
	})
}

package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

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
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		resp, err := ec.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{}))
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		out := jsonList{limit: maxListingBytes}
		for _, p := range resp.Msg.GetProcesses() {
			pj := processJSON{PID: p.GetPid(), Tag: ptr(p.GetTag()), Cmd: p.GetCmd(), Args: p.GetArgs(),
				PTY: p.GetPty(), Running: p.GetRunning()}
			if pj.Args == nil {
				pj.Args = []string{}
			}
			if !p.GetRunning() {
				code := p.GetExitCode()
				pj.ExitCode, pj.Signal = &code, ptr(p.GetSignal())
			}
			ok, err := out.add(pj)
			if err != nil {
				return err
			}
			if !ok {
				return errorf(codeTooLarge, "the process list is larger than %d MiB as JSON", maxListingBytes>>20)
			}
		}
		s.used(r, c, "", nil)
		answerJSON(w, http.StatusOK, out.bytes())
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

func (s *server) handleKillProcess() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		pid, err := strconv.ParseUint(r.PathValue("pid"), 10, 32)
		if err != nil || pid == 0 {
			return errorf(codeProcessNotFound, "no process with pid %q", r.PathValue("pid"))
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
			Process: pidSelector(uint32(pid)), Signal: sig,
		}))
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		s.used(r, c, "process.kill", map[string]any{"pid": pid, "signal": signalName(sig)})
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

package process

import (
	"context"
	"errors"
	"io/fs"
	"syscall"
	"time"

	"connectrpc.com/connect"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
	"github.com/wrenn-dev/wrenn/proto/envd/v1/envdv1connect"
)

// Service serves ProcessService over a Table. It is safe for concurrent use.
type Service struct {
	table     *Table
	keepalive time.Duration
}

var _ envdv1connect.ProcessServiceHandler = (*Service)(nil)

// NewService returns the RPC service for t, sending a keepalive event on idle
// streams every keepalive (default 15 s).
func NewService(t *Table, keepalive time.Duration) *Service {
	if keepalive <= 0 {
		keepalive = 15 * time.Second
	}
	return &Service{table: t, keepalive: keepalive}
}

// hangupGrace is how long a terminal's process has after SIGHUP, once the
// caller that started it went away, before it gets SIGKILL.
const hangupGrace = 2 * time.Second

// Start implements ProcessService.Start. A process with a PTY is a terminal:
// when the stream that started it goes away before it ends, it gets SIGHUP,
// as when a terminal window closes, and SIGKILL hangupGrace later. The
// control plane hangs up a terminal whose client leaves itself; this also
// covers a stream cut by a pause or a snapshot, whose restored process
// would otherwise run on with nobody attached (the stream dies then when the
// restored envd next writes to it: its keepalive at the latest).
func (s *Service) Start(ctx context.Context, req *connect.Request[envdv1.StartRequest], stream *connect.ServerStream[envdv1.StartResponse]) error {
	p, err := s.table.Start(req.Msg)
	if err != nil {
		return s.rpcError(err)
	}
	err = s.follow(ctx, p, func(ev *envdv1.ProcessEvent) error {
		return stream.Send(&envdv1.StartResponse{Event: ev})
	})
	if p.tty != nil && !p.ended() {
		go hangUp(p, hangupGrace)
	}
	return err
}

// hangUp sends p SIGHUP and, if it has not ended after grace, SIGKILL.
func hangUp(p *Proc, grace time.Duration) {
	if p.Signal(syscall.SIGHUP) != nil {
		return // it has ended
	}
	for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if p.ended() {
			return
		}
	}
	_ = p.Signal(syscall.SIGKILL)
}

// Connect implements ProcessService.Connect.
func (s *Service) Connect(ctx context.Context, req *connect.Request[envdv1.ConnectRequest], stream *connect.ServerStream[envdv1.ConnectResponse]) error {
	p, err := s.table.Find(req.Msg.GetProcess())
	if err != nil {
		return s.rpcError(err)
	}
	return s.follow(ctx, p, func(ev *envdv1.ProcessEvent) error {
		return stream.Send(&envdv1.ConnectResponse{Event: ev})
	})
}

// follow sends p's events from its first output on: a start event, the
// buffered and then live output, and the end event. The process never waits
// for the caller: a caller that falls behind by more than the buffer gets a
// dropped event instead of the bytes it missed.
func (s *Service) follow(ctx context.Context, p *Proc, send func(*envdv1.ProcessEvent) error) error {
	if err := send(&envdv1.ProcessEvent{Event: &envdv1.ProcessEvent_Start{Start: &envdv1.StartEvent{Pid: uint32(p.pid), Tag: p.tag}}}); err != nil {
		return err
	}
	keepalive := time.NewTicker(s.keepalive)
	defer keepalive.Stop()
	var cursor uint64
	for {
		r := p.log.read(cursor, 256<<10)
		cursor = r.next
		if r.dropped > 0 {
			if err := send(&envdv1.ProcessEvent{Event: &envdv1.ProcessEvent_Dropped{Dropped: &envdv1.DroppedEvent{Bytes: r.dropped}}}); err != nil {
				return err
			}
		}
		for _, data := range r.events {
			if err := send(&envdv1.ProcessEvent{Event: &envdv1.ProcessEvent_Data{Data: data}}); err != nil {
				return err
			}
		}
		if len(r.events) > 0 {
			keepalive.Reset(s.keepalive)
			continue
		}
		if r.end != nil {
			return send(&envdv1.ProcessEvent{Event: &envdv1.ProcessEvent_End{End: r.end}})
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-keepalive.C:
			if err := send(&envdv1.ProcessEvent{Event: &envdv1.ProcessEvent_Keepalive{Keepalive: &envdv1.KeepaliveEvent{}}}); err != nil {
				return err
			}
		}
	}
}

// SendInput implements ProcessService.SendInput.
func (s *Service) SendInput(ctx context.Context, req *connect.Request[envdv1.SendInputRequest]) (*connect.Response[envdv1.SendInputResponse], error) {
	p, err := s.table.Find(req.Msg.GetProcess())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := p.Write(ctx, req.Msg.GetData()); err != nil {
		return nil, s.rpcError(err)
	}
	return connect.NewResponse(&envdv1.SendInputResponse{}), nil
}

// StreamInput implements ProcessService.StreamInput.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[envdv1.StreamInputRequest]) (*connect.Response[envdv1.StreamInputResponse], error) {
	var p *Proc
	for stream.Receive() {
		msg := stream.Msg()
		if p == nil {
			var err error
			if p, err = s.table.Find(msg.GetProcess()); err != nil {
				return nil, s.rpcError(err)
			}
		}
		if len(msg.GetData()) == 0 {
			continue
		}
		if err := p.Write(ctx, msg.GetData()); err != nil {
			return nil, s.rpcError(err)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("streaming input: no message named a process"))
	}
	return connect.NewResponse(&envdv1.StreamInputResponse{}), nil
}

// CloseStdin implements ProcessService.CloseStdin.
func (s *Service) CloseStdin(ctx context.Context, req *connect.Request[envdv1.CloseStdinRequest]) (*connect.Response[envdv1.CloseStdinResponse], error) {
	p, err := s.table.Find(req.Msg.GetProcess())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := p.CloseStdin(); err != nil {
		return nil, s.rpcError(err)
	}
	return connect.NewResponse(&envdv1.CloseStdinResponse{}), nil
}

// SendSignal implements ProcessService.SendSignal.
func (s *Service) SendSignal(ctx context.Context, req *connect.Request[envdv1.SendSignalRequest]) (*connect.Response[envdv1.SendSignalResponse], error) {
	sig := req.Msg.GetSignal()
	if sig == envdv1.Signal_SIGNAL_UNSPECIFIED || envdv1.Signal_name[int32(sig)] == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("sending signal: unknown signal"))
	}
	p, err := s.table.Find(req.Msg.GetProcess())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := p.Signal(syscall.Signal(sig)); err != nil {
		return nil, s.rpcError(err)
	}
	return connect.NewResponse(&envdv1.SendSignalResponse{}), nil
}

// Update implements ProcessService.Update.
func (s *Service) Update(ctx context.Context, req *connect.Request[envdv1.UpdateRequest]) (*connect.Response[envdv1.UpdateResponse], error) {
	p, err := s.table.Find(req.Msg.GetProcess())
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := p.Resize(req.Msg.GetPty()); err != nil {
		return nil, s.rpcError(err)
	}
	return connect.NewResponse(&envdv1.UpdateResponse{}), nil
}

// List implements ProcessService.List.
func (s *Service) List(ctx context.Context, req *connect.Request[envdv1.ListRequest]) (*connect.Response[envdv1.ListResponse], error) {
	return connect.NewResponse(&envdv1.ListResponse{Processes: s.table.List()}), nil
}

// rpcError gives err the RPC code its kind calls for, logging internal ones.
func (s *Service) rpcError(err error) error {
	code := connect.CodeInternal
	switch {
	case errors.Is(err, ErrInvalid):
		code = connect.CodeInvalidArgument
	case errors.Is(err, ErrNotFound), errors.Is(err, fs.ErrNotExist):
		code = connect.CodeNotFound
	case errors.Is(err, ErrExists), errors.Is(err, fs.ErrExist):
		code = connect.CodeAlreadyExists
	case errors.Is(err, ErrState):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, fs.ErrPermission):
		code = connect.CodePermissionDenied
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	}
	if code == connect.CodeInternal {
		s.table.log.Error("process operation failed", "err", err)
	}
	return connect.NewError(code, err)
}

package agent

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/network"

	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// capsuleService serves hostagent.v1.CapsuleService on the capsule manager.
type capsuleService struct {
	caps *Capsules
}

// connectError maps the capsule manager's errors to Connect codes, which the
// control plane maps to HTTP statuses.
func connectError(err error) error {
	switch {
	case errors.Is(err, errInvalidSpec):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, errNoTemplate), errors.Is(err, errWrongState), errors.Is(err, errBaseTemplate):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, network.ErrNoAddress):
		return connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, errCapsuleBusy):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, errNoCheckpoint):
		return connect.NewError(connect.CodeUnimplemented, err)
	case errors.Is(err, errCapsuleExists), errors.Is(err, errTemplateExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, errCapsuleNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

func specFromProto(p *hostagentv1.CapsuleSpec) CapsuleSpec {
	return CapsuleSpec{
		ID:       p.GetCapsuleId(),
		Template: p.GetTemplate(),
		VCPUs:    int(p.GetVcpus()),
		MemoryMB: int(p.GetMemoryMb()),
		DiskMB:   int(p.GetDiskMb()),
		Envs:     p.GetEnvs(),
		Network:  capsule.PolicyFromProto(p.GetNetwork()),
	}
}

func capsuleToProto(c CapsuleInfo) *hostagentv1.Capsule {
	out := &hostagentv1.Capsule{
		Spec: &hostagentv1.CapsuleSpec{
			CapsuleId: c.Spec.ID,
			Template:  c.Spec.Template,
			Vcpus:     int32(c.Spec.VCPUs),
			MemoryMb:  int32(c.Spec.MemoryMB),
			DiskMb:    int32(c.Spec.DiskMB),
			Network:   capsule.PolicyToProto(c.Spec.Network),
		},
		Status:          c.Status,
		State:           capsule.ToProto(capsule.Status(c.Status)),
		StartedAtUnixMs: c.StartedAt.UnixMilli(),
		RuntimeId:       c.RuntimeID,
		SnapshotBytes:   c.SnapshotBytes,
	}
	if c.Address.IsValid() {
		out.Address = c.Address.String()
	}
	return out
}

func (s capsuleService) CreateCapsule(ctx context.Context, req *connect.Request[hostagentv1.CreateCapsuleRequest]) (*connect.Response[hostagentv1.CreateCapsuleResponse], error) {
	if req.Msg.GetSpec() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("spec is required"))
	}
	info, err := s.caps.Create(ctx, specFromProto(req.Msg.GetSpec()))
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.CreateCapsuleResponse{Capsule: capsuleToProto(info)}), nil
}

func (s capsuleService) DestroyCapsule(ctx context.Context, req *connect.Request[hostagentv1.DestroyCapsuleRequest]) (*connect.Response[hostagentv1.DestroyCapsuleResponse], error) {
	err := s.caps.Destroy(ctx, req.Msg.GetCapsuleId())
	var left *LeftoversError
	if errors.As(err, &left) {
		// Destroyed as far as the caller can tell: the capsule will not
		// run again, and the rest is retried (see LeftoversError).
		return connect.NewResponse(&hostagentv1.DestroyCapsuleResponse{Leftovers: left.Err.Error()}), nil
	}
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.DestroyCapsuleResponse{}), nil
}

func (s capsuleService) GetCapsule(ctx context.Context, req *connect.Request[hostagentv1.GetCapsuleRequest]) (*connect.Response[hostagentv1.GetCapsuleResponse], error) {
	info, err := s.caps.Get(ctx, req.Msg.GetCapsuleId())
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.GetCapsuleResponse{Capsule: capsuleToProto(info)}), nil
}

func (s capsuleService) ListCapsules(ctx context.Context, _ *connect.Request[hostagentv1.ListCapsulesRequest]) (*connect.Response[hostagentv1.ListCapsulesResponse], error) {
	infos, err := s.caps.List(ctx)
	if err != nil {
		return nil, connectError(err)
	}
	out := &hostagentv1.ListCapsulesResponse{}
	for _, info := range infos {
		out.Capsules = append(out.Capsules, capsuleToProto(info))
	}
	return connect.NewResponse(out), nil
}

func (s capsuleService) PauseCapsule(ctx context.Context, req *connect.Request[hostagentv1.PauseCapsuleRequest]) (*connect.Response[hostagentv1.PauseCapsuleResponse], error) {
	info, err := s.caps.Pause(ctx, req.Msg.GetCapsuleId())
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.PauseCapsuleResponse{Capsule: capsuleToProto(info)}), nil
}

func (s capsuleService) ResumeCapsule(ctx context.Context, req *connect.Request[hostagentv1.ResumeCapsuleRequest]) (*connect.Response[hostagentv1.ResumeCapsuleResponse], error) {
	info, err := s.caps.Resume(ctx, req.Msg.GetCapsuleId())
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.ResumeCapsuleResponse{Capsule: capsuleToProto(info)}), nil
}

func (s capsuleService) SnapshotCapsule(ctx context.Context, req *connect.Request[hostagentv1.SnapshotCapsuleRequest]) (*connect.Response[hostagentv1.SnapshotCapsuleResponse], error) {
	info, tmpl, err := s.caps.Snapshot(ctx, req.Msg.GetCapsuleId(), req.Msg.GetTemplate(), req.Msg.GetResume())
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.SnapshotCapsuleResponse{
		Capsule:  capsuleToProto(info),
		Template: templateToProto(tmpl),
	}), nil
}

func (s capsuleService) SetCapsuleNetwork(ctx context.Context, req *connect.Request[hostagentv1.SetCapsuleNetworkRequest]) (*connect.Response[hostagentv1.SetCapsuleNetworkResponse], error) {
	info, err := s.caps.SetNetwork(ctx, req.Msg.GetCapsuleId(), capsule.PolicyFromProto(req.Msg.GetNetwork()))
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.SetCapsuleNetworkResponse{Capsule: capsuleToProto(info)}), nil
}

func (s capsuleService) DeleteTemplate(ctx context.Context, req *connect.Request[hostagentv1.DeleteTemplateRequest]) (*connect.Response[hostagentv1.DeleteTemplateResponse], error) {
	if err := s.caps.DeleteTemplate(ctx, req.Msg.GetTemplate()); err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&hostagentv1.DeleteTemplateResponse{}), nil
}

func templateToProto(t TemplateInfo) *hostagentv1.Template {
	return &hostagentv1.Template{
		Name: t.Name, Kind: t.Kind, Vcpus: int32(t.VCPUs), MemoryMb: int32(t.MemoryMB),
		DiskMb: int32(t.DiskMB), SizeBytes: t.SizeBytes,
	}
}

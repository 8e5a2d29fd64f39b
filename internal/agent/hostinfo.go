package agent

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// HostInfo reports the host's specs and what it has free, read from the
// machine at the time of the call.
func (s *Server) HostInfo(ctx context.Context, _ *connect.Request[hostagentv1.HostInfoRequest]) (*connect.Response[hostagentv1.HostInfoResponse], error) {
	specs, err := ReadSpecs(s.cfg.Dir, s.cfg.Runtime)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("host info: %w", err))
	}
	free, err := ReadCapacity(s.cfg.Dir)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("host info: %w", err))
	}
	return connect.NewResponse(&hostagentv1.HostInfoResponse{
		HostId:        s.hostID,
		Hostname:      specs.Hostname,
		Arch:          specs.Arch,
		Cpus:          int32(specs.CPUs),
		MemoryMb:      specs.MemoryMB,
		DiskMb:        specs.DiskMB,
		FreeMemoryMb:  free.FreeMemoryMB,
		FreeDiskMb:    free.FreeDiskMB,
		Runtime:       specs.Runtime,
		KernelVersion: specs.KernelVersion,
		AgentVersion:  specs.AgentVersion,
		UptimeSec:     uptimeSeconds(),
	}), nil
}

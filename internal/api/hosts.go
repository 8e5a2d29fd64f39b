package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

type hostJSON struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	TeamID       *string         `json:"team_id"`
	Status       string          `json:"status"`
	Arch         string          `json:"arch"`
	CPUs         int             `json:"cpus"`
	MemoryMB     int64           `json:"memory_mb"`
	DiskMB       int64           `json:"disk_mb"`
	Runtime      string          `json:"runtime"`
	Address      string          `json:"address"`
	Hostname     string          `json:"hostname"`
	AgentVersion string          `json:"agent_version"`
	FreeCPUs     int             `json:"free_cpus"`
	FreeMemoryMB int64           `json:"free_memory_mb"`
	FreeDiskMB   int64           `json:"free_disk_mb"`
	Capsules     json.RawMessage `json:"capsules"`
	Templates    []string        `json:"templates"`
	// FreeAddresses is how many more capsules the host's address pool
	// takes, as last reported (null: not reported).
	FreeAddresses *int `json:"free_addresses"`
	// TLSPin is the pin of the agent's TLS key, the only key the control
	// plane accepts from it ("" while none is pinned).
	TLSPin string `json:"tls_spki_sha256"`
	// What the host's live capsules take, by the scheduler's accounting.
	AllocatedVCPUs    int        `json:"allocated_vcpus"`
	AllocatedMemoryMB int64      `json:"allocated_memory_mb"`
	LastHeartbeatAt   *time.Time `json:"last_heartbeat_at"`
	RegisteredAt      *time.Time `json:"registered_at"`
	CreatedAt         time.Time  `json:"created_at"`
	CreatedBy         *string    `json:"created_by"`
}

func toHostJSON(h store.Host) hostJSON {
	j := hostJSON{
		ID: h.ID, Type: h.Type, TeamID: ptr(h.TeamID), Status: h.Status, Arch: h.Arch, CPUs: h.CPUs,
		MemoryMB: h.MemoryMB, DiskMB: h.DiskMB, Runtime: h.Runtime, Address: h.Address, Hostname: h.Hostname,
		AgentVersion: h.AgentVersion, FreeCPUs: h.FreeCPUs, FreeMemoryMB: h.FreeMemoryMB,
		FreeDiskMB: h.FreeDiskMB, LastHeartbeatAt: h.LastHeartbeatAt, RegisteredAt: h.RegisteredAt,
		CreatedAt: h.CreatedAt, CreatedBy: ptr(h.CreatedBy),
		Capsules:  h.Capsules, // never empty: the column is NOT NULL DEFAULT '[]'
		Templates: h.Templates, AllocatedVCPUs: h.AllocatedVCPUs, AllocatedMemoryMB: h.AllocatedMemoryMB,
		TLSPin: h.TLSPin,
	}
	if h.FreeAddresses >= 0 {
		j.FreeAddresses = &h.FreeAddresses
	}
	if j.Templates == nil {
		j.Templates = []string{}
	}
	return j
}

// registrationTokenJSON is a freshly issued registration token.
type registrationTokenJSON struct {
	RegistrationToken          string    `json:"registration_token"`
	RegistrationTokenExpiresAt time.Time `json:"registration_token_expires_at"`
}

// newRegistrationToken returns a token to hand out and its stored form.
func (s *server) newRegistrationToken() (registrationTokenJSON, store.Secret, error) {
	tok, hash, err := auth.NewToken(auth.RegistrationTokenPrefix)
	if err != nil {
		return registrationTokenJSON{}, store.Secret{}, err
	}
	exp := time.Now().Add(s.cfg.RegistrationTokenTTL).UTC().Truncate(time.Second)
	return registrationTokenJSON{RegistrationToken: tok, RegistrationTokenExpiresAt: exp},
		store.Secret{Hash: hash, ExpiresAt: exp}, nil
}

// visibleHost returns a host the caller may see: platform admins see every
// host, others only their team's BYOC hosts. Anything else is not found, so
// that ids of other teams' hosts reveal nothing.
func (s *server) visibleHost(r *http.Request, p principal) (store.Host, error) {
	id, err := pathID(r, "host")
	if err != nil {
		return store.Host{}, err
	}
	h, err := s.store.Host(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.PlatformAdmin && h.TeamID != p.TeamID) {
		return store.Host{}, errorf(codeNotFound, "no host with id %s", id)
	}
	return h, err
}

// hostEvent returns the audit event of an action by p on a host of team
// hostTeam. It belongs to the host's team, as the agent's own events do:
// a BYOC host's team sees it, a shared host's ("" team) only platform admins.
func (s *server) hostEvent(r *http.Request, p principal, hostTeam, action string, meta map[string]any) store.Event {
	ev := s.event(r, p, action, meta)
	ev.TeamID = hostTeam
	return ev
}

func requireAdmin(p principal, what string) error {
	if !p.PlatformAdmin {
		return errorf(codeForbidden, "only platform admins can %s", what)
	}
	return nil
}

func (s *server) handleCreateHost() http.Handler {
	type request struct {
		Type   string `json:"type"`
		TeamID string `json:"team_id"`
	}
	type response struct {
		hostJSON
		registrationTokenJSON
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		if err := requireAdmin(p, "add hosts"); err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		nh := store.NewHost{Type: req.Type, CreatedBy: p.UserID}
		switch req.Type {
		case store.HostRegular:
			if req.TeamID != "" {
				return errorf(codeInvalid, "team_id applies only to byoc hosts")
			}
		case store.HostBYOC:
			id, err := uuid.Parse(req.TeamID)
			if err != nil {
				return errorf(codeInvalid, "byoc hosts need team_id, the id of the team that owns them")
			}
			nh.TeamID = id.String()
			ok, err := s.store.TeamExists(r.Context(), nh.TeamID)
			if err != nil {
				return err
			}
			if !ok {
				return errorf(codeInvalid, "team_id: no team with id %s", nh.TeamID)
			}
		case "":
			return errorf(codeInvalid, `type is required: "regular" or "byoc"`)
		default:
			return errorf(codeInvalid, `type must be "regular" or "byoc", not %q`, req.Type)
		}
		tok, secret, err := s.newRegistrationToken()
		if err != nil {
			return err
		}
		h, err := s.store.CreateHost(r.Context(), nh, secret, s.hostEvent(r, p, nh.TeamID, "host.create", map[string]any{"type": nh.Type}))
		if err != nil {
			return err
		}
		s.log.InfoContext(r.Context(), "host created", "host_id", h.ID, "type", h.Type)
		encode(w, http.StatusCreated, response{toHostJSON(h), tok})
		return nil
	})
}

func (s *server) handleListHosts() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		team := p.TeamID
		if p.PlatformAdmin {
			team = ""
		}
		hosts, err := s.store.Hosts(r.Context(), team)
		if err != nil {
			return err
		}
		out := make([]hostJSON, 0, len(hosts))
		for _, h := range hosts {
			out = append(out, toHostJSON(h))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// agentInfoJSON is what the agent says about itself (HostInfo RPC).
type agentInfoJSON struct {
	HostID        string `json:"host_id"`
	Hostname      string `json:"hostname"`
	Arch          string `json:"arch"`
	CPUs          int32  `json:"cpus"`
	MemoryMB      int64  `json:"memory_mb"`
	DiskMB        int64  `json:"disk_mb"`
	FreeMemoryMB  int64  `json:"free_memory_mb"`
	FreeDiskMB    int64  `json:"free_disk_mb"`
	Runtime       string `json:"runtime"`
	KernelVersion string `json:"kernel_version"`
	AgentVersion  string `json:"agent_version"`
	UptimeSec     int64  `json:"uptime_sec"`
}

func (s *server) handleGetHost() http.Handler {
	type response struct {
		hostJSON
		Agent      *agentInfoJSON `json:"agent,omitempty"`
		AgentError string         `json:"agent_error,omitempty"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		h, err := s.visibleHost(r, caller(r))
		if err != nil {
			return err
		}
		resp := response{hostJSON: toHostJSON(h)}
		if h.Status == store.HostOnline && h.Address != "" {
			// The host record stands on its own: a silent agent is
			// reported, not turned into a failed request.
			resp.Agent, err = s.agentInfo(r.Context(), h)
			if err != nil {
				// Only the code: the agent chose the address, and the
				// cause (dial errors, foreign answers) would let a BYOC team
				// probe the control plane's network through it.
				s.log.WarnContext(r.Context(), "agent HostInfo failed", "host_id", h.ID, "err", err)
				resp.AgentError = "the agent did not answer: " + connect.CodeOf(err).String()
			}
		}
		encode(w, http.StatusOK, resp)
		return nil
	})
}

// agentInfo asks a host's agent about itself.
func (s *server) agentInfo(ctx context.Context, h store.Host) (*agentInfoJSON, error) {
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	client := hostagentv1connect.NewHostAgentServiceClient(s.agents.client(h), agentURL(h), s.agentOptions(h.ID))
	res, err := client.HostInfo(ctx, connect.NewRequest(&hostagentv1.HostInfoRequest{}))
	if err != nil {
		return nil, err
	}
	m := res.Msg
	return &agentInfoJSON{
		HostID: m.GetHostId(), Hostname: m.GetHostname(), Arch: m.GetArch(), CPUs: m.GetCpus(),
		MemoryMB: m.GetMemoryMb(), DiskMB: m.GetDiskMb(), FreeMemoryMB: m.GetFreeMemoryMb(),
		FreeDiskMB: m.GetFreeDiskMb(), Runtime: m.GetRuntime(), KernelVersion: m.GetKernelVersion(),
		AgentVersion: m.GetAgentVersion(), UptimeSec: m.GetUptimeSec(),
	}, nil
}

func (s *server) handleDeleteHost() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		h, err := s.visibleHost(r, p)
		if err != nil {
			return err
		}
		if err := requireAdmin(p, "delete hosts"); err != nil {
			return err
		}
		err = s.store.DeleteHost(r.Context(), h.ID, s.hostEvent(r, p, h.TeamID, "host.delete", map[string]any{"type": h.Type, "hostname": h.Hostname}))
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no host with id %s", h.ID)
		}
		if err != nil {
			return err
		}
		s.log.InfoContext(r.Context(), "host deleted", "host_id", h.ID)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (s *server) handleHostToken() http.Handler {
	type response struct {
		HostID string `json:"host_id"`
		registrationTokenJSON
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		h, err := s.visibleHost(r, p)
		if err != nil {
			return err
		}
		if err := requireAdmin(p, "issue host registration tokens"); err != nil {
			return err
		}
		tok, secret, err := s.newRegistrationToken()
		if err != nil {
			return err
		}
		err = s.store.IssueRegistrationToken(r.Context(), h.ID, secret, s.hostEvent(r, p, h.TeamID, "host.token", nil))
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no host with id %s", h.ID)
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusCreated, response{HostID: h.ID, registrationTokenJSON: tok})
		return nil
	})
}

// Package hostproto declares, once, the JSON messages of the host protocol
// (docs/host-protocol.md): what wrenn-agent sends the control plane to
// register, heartbeat and refresh its credential, and what it gets back.
// The agent's client and the control plane's handlers both use these types,
// so the two sides cannot drift apart.
package hostproto

import "time"

// Paths of the host protocol's endpoints. Heartbeat's takes the host id.
const (
	RegisterPath = "/v1/hosts/register"
	RefreshPath  = "/v1/hosts/auth/refresh"
)

// HeartbeatPath is where host hostID heartbeats.
func HeartbeatPath(hostID string) string { return "/v1/hosts/" + hostID + "/heartbeat" }

// RegisterRequest is POST /v1/hosts/register: a registration token and the
// machine the agent runs on.
type RegisterRequest struct {
	Token        string `json:"token"`
	Address      string `json:"address"`
	Arch         string `json:"arch"`
	CPUs         int    `json:"cpus"`
	MemoryMB     int64  `json:"memory_mb"`
	DiskMB       int64  `json:"disk_mb"`
	Runtime      string `json:"runtime"`
	AgentVersion string `json:"agent_version"`
	Hostname     string `json:"hostname"`
	// TLSPin is the SHA-256 of the agent's TLS public key (base64 of the
	// SubjectPublicKeyInfo's digest, internal/hosttls): the control plane
	// pins it and accepts no other key when it calls the agent.
	TLSPin string `json:"tls_spki_sha256"`
}

// Credentials are what registration and refresh hand the agent: a host
// credential for heartbeats, the single-use refresh token that replaces
// it, and the control plane's Ed25519 key that signs its calls to the agent.
type Credentials struct {
	Credential          string    `json:"credential"`
	CredentialExpiresAt time.Time `json:"credential_expires_at"`
	RefreshToken        string    `json:"refresh_token"`
	CPPublicKey         string    `json:"cp_public_key"`
}

// RegisterResponse answers a registration. Host is the host object the
// control plane shows users (HostRef is the part the agent reads).
type RegisterResponse[Host any] struct {
	Host Host `json:"host"`
	Credentials
}

// HostRef is the host object as far as the agent cares.
type HostRef struct {
	ID string `json:"id"`
}

// HeartbeatRequest is POST /v1/hosts/{id}/heartbeat. The free capacity is
// required (pointers tell a missing field from zero); Capsules and
// Templates are always sent, empty when the host has none.
type HeartbeatRequest struct {
	FreeCPUs     *int            `json:"free_cpus"`
	FreeMemoryMB *int64          `json:"free_memory_mb"`
	FreeDiskMB   *int64          `json:"free_disk_mb"`
	Capsules     []CapsuleReport `json:"capsules"`
	// Templates are the base templates the host has on disk; capsules
	// are placed only where their template is.
	Templates []string `json:"templates"`
	// Snapshots is one page of the snapshot directories the host holds
	// (at most SnapshotPage names, sorted, after the cursor the last
	// answer gave), so that no number of snapshots makes a heartbeat too
	// large; SnapshotsTotal is how many it holds in all. The control plane
	// removes the ones no template owns.
	Snapshots      []string `json:"snapshots,omitempty"`
	SnapshotsTotal int      `json:"snapshots_total,omitempty"`
	// Address, when set, replaces the address the host registered with
	// (an agent started with --address and no --register).
	Address string `json:"address,omitempty"`
	// TLSPin is the agent's TLS key pin, as at registration. A host
	// registered before agents served TLS has none pinned: the control
	// plane pins the first one a heartbeat brings, and refuses a
	// heartbeat whose pin differs from the pinned one.
	TLSPin string `json:"tls_spki_sha256,omitempty"`
	// FreeAddresses is how many more capsules the host's address pool
	// can take (a capsule holds its address while paused too).
	FreeAddresses *int `json:"free_addresses,omitempty"`
}

// CapsuleReport is one capsule in a heartbeat, with the status the agent
// sees: "running", "paused", or "stopped" (its sandbox exited without
// being destroyed); the warm pool's and transient ones as the agent names
// them.
type CapsuleReport struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	Status               string `json:"status"`
	HeartbeatIntervalSec int    `json:"heartbeat_interval_sec"`
	// SnapshotsAfter is where the next heartbeat's page of Snapshots
	// starts (names after it); empty to start again from the first.
	SnapshotsAfter string `json:"snapshots_after,omitempty"`
}

// SnapshotPage is the most snapshot directories one heartbeat reports.
const SnapshotPage = 1000

// RefreshRequest is POST /v1/hosts/auth/refresh.
type RefreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// RefreshResponse answers a refresh: new credentials for host HostID.
type RefreshResponse struct {
	HostID string `json:"host_id"`
	Credentials
}

// TemplateImportPath is the agent's route to which the control plane
// streams an OCI image (an OCI image layout or a `docker save` archive, as
// one tar file) to make template name; the query gives its default sizes
// (vcpus, memory_mb, disk_mb). The call carries a token for
// TemplateImportProcedure(name) bound to its request line. The answer is
// a stream of ImportLine, one JSON object a line.
func TemplateImportPath(name string) string { return "/templates/" + name + "/import" }

// TemplateImportProcedure is the subject of the control plane's token for
// importing template name.
func TemplateImportProcedure(name string) string { return "template-import:" + name }

// TemplateExportPath is the agent's route (GET) that streams template
// name — its directory, and its disk image where the runtime has one — as
// one tar stream (entries "template/…" and "image.ext4"), for a host that
// lacks it. The call carries a token for TemplateExportProcedure(name)
// bound to its request line. The answer ends with the trailer
// TemplateDigestTrailer: the SHA-256 of the whole stream.
func TemplateExportPath(name string) string { return "/templates/" + name + "/export" }

// TemplateExportProcedure is the subject of the control plane's token for
// exporting template name.
func TemplateExportProcedure(name string) string { return "template-export:" + name }

// TemplateReceivePath is the agent's route (POST) that takes template
// name as TemplateExportPath streams it, with the same trailer, and puts
// it in place once the digest matches. The call carries a token for
// TemplateReceiveProcedure(name) bound to its request line; the answer is
// a ReceivedTemplate.
func TemplateReceivePath(name string) string { return "/templates/" + name + "/receive" }

// TemplateReceiveProcedure is the subject of the control plane's token for
// sending template name to a host.
func TemplateReceiveProcedure(name string) string { return "template-receive:" + name }

// TemplateDigestTrailer is the HTTP trailer that carries the hex SHA-256
// of a template's tar stream, from the exporting host through the control
// plane to the receiving one: a stream cut short at an entry's boundary is
// still a valid tar stream, and the digest is what tells.
const TemplateDigestTrailer = "Wrenn-Template-Sha256"

// ReceivedTemplate answers TemplateReceivePath: the template is in place
// (Existed: it already was, and nothing was written).
type ReceivedTemplate struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	Existed   bool   `json:"existed"`
}

// ImportLine is one line of an import's answer: progress (Log), then the
// template made, or why the import failed.
type ImportLine struct {
	Log      string            `json:"log,omitempty"`
	Template *ImportedTemplate `json:"template,omitempty"`
	Error    *ImportError      `json:"error,omitempty"`
}

// ImportError is how an import failed: Code is "invalid_argument" for an
// archive that is no usable image or a bad request, "already_exists" when
// the host has a template of that name, else "internal".
type ImportError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ImportedTemplate is a template an import made.
type ImportedTemplate struct {
	Name        string      `json:"name"`
	SizeBytes   int64       `json:"size_bytes"`
	EnvdVersion string      `json:"envd_version"`
	Config      ImageConfig `json:"config"`
}

// ImageConfig is what an image's configuration says about running it.
type ImageConfig struct {
	Env          []string `json:"env,omitempty"`
	User         string   `json:"user,omitempty"`
	WorkingDir   string   `json:"workdir,omitempty"`
	Entrypoint   []string `json:"entrypoint,omitempty"`
	Cmd          []string `json:"cmd,omitempty"`
	ExposedPorts []string `json:"exposed_ports,omitempty"`
}

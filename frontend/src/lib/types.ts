// Shapes of the API's JSON, as docs/api.md describes them.

export type CapsuleStatus =
  | 'pending'
  | 'starting'
  | 'running'
  | 'pausing'
  | 'paused'
  | 'resuming'
  | 'stopped'
  | 'missing'
  | 'error';

export interface Capsule {
  id: string;
  status: CapsuleStatus;
  status_reason?: string;
  template: string;
  vcpus: number;
  memory_mb: number;
  disk_mb: number;
  timeout_sec: number;
  metadata: Record<string, string>;
  host_id: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  stopped_at: string | null;
  last_active_at: string;
  paused_at: string | null;
  snapshot_bytes: number;
  network: NetworkPolicy;
  /** Ports the port proxy serves without credentials. */
  public_ports?: number[];
  /** A request to one of its ports resumes it when paused. */
  auto_resume?: boolean;
}

/** A capsule's egress policy (docs/network.md): deny entries win; an allow
 * list or internet off makes it default-deny. Entries are IPv4 CIDRs and
 * domain names ("example.com", "*.example.com"). */
export interface NetworkPolicy {
  internet: boolean;
  allow: string[];
  deny: string[];
}

/** A TCP port of a capsule, as GET /v1/capsules/{id}/ports lists it. */
export interface CapsulePort {
  port: number;
  public: boolean;
  listening: boolean;
  addresses: string[];
  /** The host form when the control plane has a proxy domain, else the path form. */
  url: string;
  /** The path form, /v1/capsules/{id}/ports/{port}/, on this origin. */
  path_url: string;
}

/** A signed access URL of a port. */
export interface PortURL {
  url: string;
  path_url: string;
  token: string;
  expires_at: string;
}

export interface CapsuleList {
  capsules: Capsule[];
  next_cursor: string | null;
}

export interface NewCapsule {
  template: string;
  vcpus?: number;
  memory_mb?: number;
  disk_mb?: number;
  timeout_sec?: number;
  envs?: Record<string, string>;
  metadata?: Record<string, string>;
}

export interface Template {
  name: string;
  kind: 'base' | 'snapshot' | 'image';
  description: string;
  size_bytes: number;
  default_vcpus: number;
  default_memory_mb: number;
  default_disk_mb: number;
  created_at: string;
  host_id: string | null;
  source_capsule_id: string | null;
  /** Every team's (base templates, public builds); else the team's own. */
  public?: boolean;
  /** How long its build took, for built templates. */
  build_ms?: number | null;
}

/** A template build (POST /v1/templates). */
export interface Build {
  id: string;
  name: string;
  public: boolean;
  source: 'image' | 'recipe';
  status: 'running' | 'succeeded' | 'failed' | 'cancelled';
  error: string;
  steps_total: number;
  steps_done: number;
  current_step: string;
  progress: number;
  host_id: string | null;
  capsule_id: string | null;
  template_id: string | null;
  size_bytes: number;
  created_at: string;
  finished_at: string | null;
  duration_ms: number;
}

/** One line of a build's log. */
export interface BuildLog {
  seq: number;
  step: number;
  stream: 'info' | 'stdout' | 'stderr';
  line: string;
  at: string;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  created_by: string | null;
  last_used_at: string | null;
  /** What the key may do (see API_KEY_SCOPES). */
  scopes: string[];
  /** Only in the answer to a create: shown once. */
  key?: string;
}

export interface Host {
  id: string;
  type: string;
  team_id: string | null;
  status: string;
  arch: string;
  cpus: number;
  memory_mb: number;
  disk_mb: number;
  runtime: string;
  address: string;
  hostname: string;
  agent_version: string;
  free_cpus: number;
  free_memory_mb: number;
  free_disk_mb: number;
  templates: string[];
  allocated_vcpus: number;
  allocated_memory_mb: number;
  last_heartbeat_at: string | null;
  registered_at: string | null;
  created_at: string;
  created_by: string | null;
  registration_token?: string;
}

export interface User {
  id: string;
  email: string;
  name: string;
  is_platform_admin: boolean;
  created_at: string;
}

export interface Team {
  id: string;
  name: string;
  role: 'owner' | 'admin' | 'member';
}

export interface Session {
  token: string;
  expires_at: string;
  user: User;
  team?: Team;
}

export interface Me {
  user: User | null;
  team: Team;
  teams: Team[];
  is_platform_admin: boolean;
  auth_method: 'session' | 'api_key';
  api_key_id?: string;
}

export interface Member {
  user_id: string;
  email: string;
  name: string;
  role: 'owner' | 'admin' | 'member';
  joined_at: string;
}

export interface AuditEntry {
  id: string;
  team_id: string | null;
  actor_type: string;
  actor_id: string | null;
  action: string;
  resource_id: string | null;
  metadata: Record<string, unknown>;
  ip: string | null;
  created_at: string;
}

export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_at: string;
  symlink_target: string | null;
}

export interface ProcessInfo {
  pid: number;
  tag: string;
  cmd: string;
  args: string[];
  pty: boolean;
  running: boolean;
  exit_code: number | null;
  signal: string | null;
}

export interface CapsuleMetrics {
  cpu_count: number;
  cpu_used_pct: number;
  mem_total_bytes: number;
  mem_used_bytes: number;
  mem_available_bytes: number;
  disk_total_bytes: number;
  disk_used_bytes: number;
  load_1: number;
  processes: number;
  timestamp: string;
}

/** The scopes of API keys, as the server names them, with what each allows. */
export const API_KEY_SCOPES: { name: string; label: string; byDefault: boolean; adminOnly?: boolean }[] = [
  { name: 'capsules', label: 'Create, pause, resume and delete capsules', byDefault: true },
  { name: 'exec', label: 'Run commands and terminals, manage processes', byDefault: true },
  { name: 'files', label: 'Read and write files in capsules', byDefault: true },
  { name: 'snapshots', label: 'Create and delete snapshots', byDefault: true },
  { name: 'templates', label: 'List templates', byDefault: true },
  { name: 'hosts', label: 'List the hosts the team can see', byDefault: false },
  { name: 'team', label: 'Read the team members and audit log', byDefault: false },
  { name: 'keys:manage', label: 'List, create and delete API keys', byDefault: false },
  { name: 'platform:admin', label: 'Act as platform admin (hosts of every team)', byDefault: false, adminOnly: true },
];

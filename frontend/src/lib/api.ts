// The dashboard's client for Wrenn's REST API (/v1). The browser holds the
// session in an httpOnly cookie (wrenn_session) that this code never sees;
// writes carry the CSRF token that the server put in the readable
// wrenn_csrf cookie. Every failure becomes an ApiError whose message is the
// server's own words, so dialogs can show it as is.

import type {
  ApiKey,
  AuditEntry,
  Capsule,
  CapsuleList,
  CapsuleMetrics,
  CapsulePort,
  PortURL,
  FileEntry,
  Host,
  Me,
  Member,
  NetworkPolicy,
  NewCapsule,
  ProcessInfo,
  Session,
  Template,
  Build,
  BuildLog,
} from './types';

/** An error answered by the API (or a network failure, status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** For 409s on capsules: the capsule's current status. */
  readonly capsuleStatus?: string;

  constructor(status: number, code: string, message: string, capsuleStatus?: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.capsuleStatus = capsuleStatus;
  }
}

/** Called when the API answers 401: the session is gone. */
let onUnauthenticated: (() => void) | undefined;
export function setUnauthenticatedHandler(fn: () => void): void {
  onUnauthenticated = fn;
}

function cookie(name: string): string | undefined {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

/**
 * Whether the browser holds a session: the server sets the readable
 * wrenn_csrf cookie next to the httpOnly session cookie, with the same
 * lifetime, and clears both on sign-out. Checking it first keeps a
 * signed-out visit from asking /v1/me for a 401 (which the browser would
 * log as an error).
 */
export function hasSessionCookie(): boolean {
  return cookie('wrenn_csrf') !== undefined;
}

// The team the dashboard acts for, when the user picked one other than
// their own (a session may act for any team it belongs to). Kept across
// reloads in localStorage; the server checks membership on every call.
const teamKey = 'wrenn.team';
let currentTeam: string | undefined = (typeof localStorage !== 'undefined' && localStorage.getItem(teamKey)) || undefined;

/** Picks the team later calls act for; undefined means the user's own. */
export function setTeam(id: string | undefined): void {
  currentTeam = id;
  if (id) localStorage.setItem(teamKey, id);
  else localStorage.removeItem(teamKey);
}

export function selectedTeam(): string | undefined {
  return currentTeam;
}

/** Headers every call carries; writes add the CSRF token. */
function headers(method: string, extra?: HeadersInit): Headers {
  const h = new Headers(extra);
  if (currentTeam) h.set('X-Team-ID', currentTeam);
  if (!['GET', 'HEAD', 'OPTIONS'].includes(method)) {
    const csrf = cookie('wrenn_csrf');
    if (csrf) h.set('X-CSRF-Token', csrf);
  }
  return h;
}

/** The ApiError of a failed answer, in the server's words when it gave any. */
function errorOf(status: number, statusText: string, body: string): ApiError {
  let code = 'http_' + status;
  let message = `${status} ${statusText}`.trim();
  let capsuleStatus: string | undefined;
  try {
    const parsed = JSON.parse(body);
    if (parsed?.error?.message) {
      code = parsed.error.code ?? code;
      message = parsed.error.message;
      capsuleStatus = parsed.error.status;
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  return new ApiError(status, code, message, capsuleStatus);
}

async function failure(res: Response): Promise<ApiError> {
  return errorOf(res.status, res.statusText, await res.text().catch(() => ''));
}

const unreachable = () =>
  new ApiError(0, 'network', 'Cannot reach the Wrenn control plane. Check your connection and try again.');

export interface RequestOptions {
  body?: unknown;
  headers?: HeadersInit;
  signal?: AbortSignal;
  /** Do not call the unauthenticated handler on 401 (sign-in page). */
  quiet401?: boolean;
}

/** Sends a request and returns the raw response, throwing ApiError on failure. */
export async function send(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
  const h = headers(method, opts.headers);
  let body: BodyInit | undefined;
  if (opts.body !== undefined) {
    h.set('Content-Type', 'application/json');
    body = JSON.stringify(opts.body);
  }
  const attempt = () => fetch(path, { method, headers: h, body, credentials: 'same-origin', signal: opts.signal });
  let res: Response;
  try {
    try {
      res = await attempt();
    } catch (e) {
      // A read that failed on the way (the browser drops requests that are
      // connecting when the machine's addresses change, as they do on a
      // host where capsules start) is tried once more; a write is not, as
      // it may have reached the server.
      if ((e instanceof DOMException && e.name === 'AbortError') || !['GET', 'HEAD'].includes(method)) throw e;
      await new Promise((r) => setTimeout(r, 250));
      res = await attempt();
    }
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw unreachable();
  }
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && !opts.quiet401) onUnauthenticated?.();
    throw err;
  }
  return res;
}

/** Sends a request and decodes the JSON answer (undefined for 204). */
export async function call<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await send(method, path, opts);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

const enc = encodeURIComponent;

/** Query string from a record, skipping empty values; arrays repeat the key. */
export function query(params: Record<string, string | number | string[] | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

/** An upload under way: done settles when it ends; abort cancels it. */
export interface Upload {
  done: Promise<void>;
  abort: () => void;
}

/**
 * Uploads a file's raw bytes (PUT /files?path=), reporting progress, which
 * fetch cannot: over XMLHttpRequest, with the same headers as every call.
 * A cancelled upload rejects with an AbortError.
 */
function uploadFile(id: string, path: string, file: Blob, onprogress: (sent: number, total: number) => void): Upload {
  const xhr = new XMLHttpRequest();
  const done = new Promise<void>((resolve, reject) => {
    xhr.open('PUT', `/v1/capsules/${enc(id)}/files` + query({ path }));
    headers('PUT', { 'Content-Type': 'application/octet-stream' }).forEach((v, k) => xhr.setRequestHeader(k, v));
    xhr.upload.onprogress = (e) => onprogress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(errorOf(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => reject(unreachable());
    xhr.onabort = () => reject(new DOMException('Upload cancelled', 'AbortError'));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}

export const api = {
  // Accounts and sessions.
  signup: (email: string, password: string, name: string, bootstrapToken = '') =>
    call<Session>('POST', '/v1/auth/signup', {
      body: bootstrapToken ? { email, password, name, bootstrap_token: bootstrapToken } : { email, password, name },
      quiet401: true,
    }),
  login: (email: string, password: string) =>
    call<Session>('POST', '/v1/auth/login', { body: { email, password }, quiet401: true }),
  logout: () => call<void>('POST', '/v1/auth/logout', { quiet401: true }),
  me: () => call<Me>('GET', '/v1/me', { quiet401: true }),

  // Capsules.
  listCapsules: (params: { status?: string[]; metadata?: string[]; limit?: number; cursor?: string } = {}, signal?: AbortSignal) =>
    call<CapsuleList>('GET', '/v1/capsules' + query(params), { signal }),
  getCapsule: (id: string, signal?: AbortSignal) => call<Capsule>('GET', `/v1/capsules/${enc(id)}`, { signal }),
  createCapsule: (spec: NewCapsule) => call<Capsule>('POST', '/v1/capsules', { body: spec }),
  destroyCapsule: (id: string) => call<void>('DELETE', `/v1/capsules/${enc(id)}`),
  pauseCapsule: (id: string) => call<Capsule>('POST', `/v1/capsules/${enc(id)}/pause`),
  resumeCapsule: (id: string) => call<Capsule>('POST', `/v1/capsules/${enc(id)}/resume`),
  setCapsuleNetwork: (id: string, policy: NetworkPolicy) =>
    call<Capsule>('PATCH', `/v1/capsules/${enc(id)}/network`, { body: policy }),
  capsuleMetrics: (id: string, signal?: AbortSignal) =>
    call<CapsuleMetrics>('GET', `/v1/capsules/${enc(id)}/metrics`, { signal }),
  listPorts: (id: string, signal?: AbortSignal) =>
    call<{ ports: CapsulePort[] }>('GET', `/v1/capsules/${enc(id)}/ports`, { signal }),
  setPortPublic: (id: string, port: number, isPublic: boolean) =>
    call<CapsulePort>('PATCH', `/v1/capsules/${enc(id)}/ports/${port}`, { body: { public: isPublic } }),
  portURL: (id: string, port: number, expiresInSec = 3600) =>
    call<PortURL>('POST', `/v1/capsules/${enc(id)}/ports/${port}/url`, { body: { expires_in_sec: expiresInSec } }),
  listProcesses: (id: string, signal?: AbortSignal) =>
    call<ProcessInfo[]>('GET', `/v1/capsules/${enc(id)}/processes`, { signal }),
  killProcess: (id: string, pid: number, signal = 'SIGTERM') =>
    call<void>('DELETE', `/v1/capsules/${enc(id)}/processes/${pid}` + query({ signal })),

  // Files.
  listFiles: (id: string, path: string, signal?: AbortSignal) =>
    call<{ entries: FileEntry[] }>('POST', `/v1/capsules/${enc(id)}/files/list`, { body: { path }, signal }),
  makeDir: (id: string, path: string) => call<FileEntry>('POST', `/v1/capsules/${enc(id)}/files/mkdir`, { body: { path } }),
  removeFile: (id: string, path: string) => call<void>('POST', `/v1/capsules/${enc(id)}/files/remove`, { body: { path } }),
  /** Raw file bytes (GET /files?path=). */
  downloadFile: (id: string, path: string, signal?: AbortSignal) =>
    send('GET', `/v1/capsules/${enc(id)}/files` + query({ path }), { signal }),
  uploadFile,
  /** The URL of a file's bytes, for a plain download link (cookie-authenticated GET). */
  fileURL: (id: string, path: string) => `/v1/capsules/${enc(id)}/files` + query({ path, team_id: currentTeam }),

  // Templates and snapshots.
  listTemplates: (signal?: AbortSignal) => call<Template[]>('GET', '/v1/templates', { signal }),
  createSnapshot: (capsuleId: string, name?: string) =>
    call<Template>('POST', '/v1/snapshots', { body: name ? { capsule_id: capsuleId, name } : { capsule_id: capsuleId } }),
  deleteSnapshot: (name: string) => call<void>('DELETE', `/v1/snapshots/${enc(name)}`),

  // Template builds.
  buildFromRecipe: (name: string, recipe: unknown) => call<Build>('POST', '/v1/templates', { body: { name, recipe } }),
  buildFromImage: (name: string, image: File) => buildFromImage(name, image),
  buildFromRef: (name: string, image: string) => call<Build>('POST', '/v1/templates', { body: { name, image } }),
  listBuilds: (signal?: AbortSignal) => call<Build[]>('GET', '/v1/templates/builds', { signal }),
  getBuild: (id: string, signal?: AbortSignal) => call<Build>('GET', `/v1/templates/builds/${enc(id)}`, { signal }),
  cancelBuild: (id: string) => call<Build>('POST', `/v1/templates/builds/${enc(id)}/cancel`),
  followBuild: (id: string, on: BuildEvents, signal: AbortSignal) => followBuild(id, on, signal),

  // API keys.
  listAPIKeys: (signal?: AbortSignal) => call<ApiKey[]>('GET', '/v1/api-keys', { signal }),
  createAPIKey: (name: string, scopes?: string[]) =>
    call<ApiKey>('POST', '/v1/api-keys', { body: scopes ? { name, scopes } : { name } }),
  deleteAPIKey: (id: string) => call<void>('DELETE', `/v1/api-keys/${enc(id)}`),

  // Hosts.
  listHosts: (signal?: AbortSignal) => call<Host[]>('GET', '/v1/hosts', { signal }),
  createHost: (body: { type: string; team_id?: string }) =>
    call<Host & { registration_token: string; registration_token_expires_at: string }>('POST', '/v1/hosts', { body }),
  hostToken: (id: string) =>
    call<{ host_id: string; registration_token: string; registration_token_expires_at: string }>(
      'POST',
      `/v1/hosts/${enc(id)}/token`,
    ),
  deleteHost: (id: string) => call<void>('DELETE', `/v1/hosts/${enc(id)}`),

  // Team.
  listMembers: (signal?: AbortSignal) => call<Member[]>('GET', '/v1/team/members', { signal }),
  addMember: (email: string, role: string) => call<Member>('POST', '/v1/team/members', { body: { email, role } }),
  setMemberRole: (userId: string, role: string) =>
    call<Member>('PATCH', `/v1/team/members/${enc(userId)}`, { body: { role } }),
  removeMember: (userId: string) => call<void>('DELETE', `/v1/team/members/${enc(userId)}`),

  // Audit log.
  auditLog: (params: { action?: string; actor_type?: string; resource_id?: string; before?: string; limit?: number }, signal?: AbortSignal) =>
    call<AuditEntry[]>('GET', '/v1/audit-log' + query(params), { signal }),
};

/** The WebSocket URL of a capsule's terminal (cookie-authenticated, same origin). */
export function ptyURL(id: string, params: { cols: number; rows: number; cmd?: string }): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // A browser WebSocket cannot send X-Team-ID: the team goes in the query.
  return (
    `${proto}//${location.host}/v1/capsules/${enc(id)}/pty` +
    query({ cols: params.cols, rows: params.rows, cmd: params.cmd, team_id: currentTeam })
  );
}

/** Uploads an image archive (multipart, part "image") to start a build. */
async function buildFromImage(name: string, image: File): Promise<Build> {
  const form = new FormData();
  form.set('name', name);
  form.set('image', image, image.name);
  let res: Response;
  try {
    res = await fetch('/v1/templates', { method: 'POST', headers: headers('POST'), body: form, credentials: 'same-origin' });
  } catch {
    throw unreachable();
  }
  if (!res.ok) throw await failure(res);
  return (await res.json()) as Build;
}

/** What following a build reports. */
export interface BuildEvents {
  log: (l: BuildLog) => void;
  status: (b: Build) => void;
  end: (b: Build) => void;
}

/**
 * Follows a build's log (server-sent events, replayed from the start) over
 * fetch rather than EventSource, so that the request carries X-Team-ID.
 * Resolves when the build ended or signal aborts.
 */
async function followBuild(id: string, on: BuildEvents, signal: AbortSignal): Promise<void> {
  let after = 0;
  for (let attempt = 0; attempt < 5 && !signal.aborted; attempt++) {
    const h = headers('GET', { Accept: 'text/event-stream' });
    let res: Response;
    try {
      res = await fetch(`/v1/templates/builds/${enc(id)}/logs` + query({ after: after || undefined }), { headers: h, signal, credentials: 'same-origin' });
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError') return;
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    if (!res.ok || !res.body) throw await failure(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (!data) continue;
          const v = JSON.parse(data);
          if (event === 'log') {
            after = v.seq;
            on.log(v as BuildLog);
          } else if (event === 'status') on.status(v as Build);
          else if (event === 'end') {
            on.end(v as Build);
            return;
          }
        }
      }
    } catch (e) {
      if (e instanceof DOMException && e.name === 'AbortError') return;
    }
  }
}

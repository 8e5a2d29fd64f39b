// Who is signed in. The cookie itself is invisible to scripts (httpOnly):
// /v1/me says whether it is still good.

import { api, ApiError, hasSessionCookie, selectedTeam, setTeam } from './api';
import type { Me } from './types';

class SessionState {
  me = $state<Me | null>(null);
  /** True until the first /v1/me answered. */
  loading = $state(true);

  async refresh(): Promise<void> {
    if (!hasSessionCookie()) {
      this.me = null;
      this.loading = false;
      return;
    }
    try {
      try {
        this.me = await api.me();
      } catch (e) {
        // The team picked earlier is no longer ours (removed from it):
        // fall back to the user's own.
        if (!(e instanceof ApiError && e.status === 403 && selectedTeam())) throw e;
        setTeam(undefined);
        this.me = await api.me();
      }
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) console.warn('checking the session failed', e);
      this.me = null;
    } finally {
      this.loading = false;
    }
  }

  get isAdmin(): boolean {
    return this.me?.is_platform_admin ?? false;
  }

  /** The caller's role in the current team. */
  get role(): string {
    return this.me?.team.role ?? 'member';
  }

  get canManageTeam(): boolean {
    return this.role === 'owner' || this.role === 'admin';
  }

  /** Acts for another team the user belongs to (undefined: their own). */
  async switchTeam(id: string | undefined): Promise<void> {
    setTeam(id);
    await this.refresh();
  }

  async signOut(): Promise<void> {
    try {
      await api.logout();
    } catch {
      // Already signed out, or the server is gone: the cookie is cleared
      // by the server when it answers; either way, leave.
    }
    setTeam(undefined);
    this.me = null;
  }
}

export const session = new SessionState();

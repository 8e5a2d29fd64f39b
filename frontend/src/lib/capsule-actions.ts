// Which lifecycle actions a capsule's status allows. The list page's row
// menu and the detail page's buttons both ask here, so they never disagree.

import type { CapsuleStatus } from './types';

export type CapsuleAction = 'pause' | 'resume' | 'snapshot' | 'destroy';

export function canPause(s: CapsuleStatus): boolean {
  return s === 'running';
}

export function canResume(s: CapsuleStatus): boolean {
  return s === 'paused';
}

export function canSnapshot(s: CapsuleStatus): boolean {
  return s === 'running' || s === 'paused';
}

export function canDestroy(s: CapsuleStatus): boolean {
  return s !== 'stopped';
}

export function allowed(s: CapsuleStatus, action: CapsuleAction): boolean {
  switch (action) {
    case 'pause':
      return canPause(s);
    case 'resume':
      return canResume(s);
    case 'snapshot':
      return canSnapshot(s);
    case 'destroy':
      return canDestroy(s);
  }
}

/** Statuses that change by themselves soon: poll faster while one shows. */
export function isTransient(s: CapsuleStatus): boolean {
  return s === 'pending' || s === 'starting' || s === 'pausing' || s === 'resuming';
}

/** Snapshot and template names: the server's rule. */
export const templateNamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

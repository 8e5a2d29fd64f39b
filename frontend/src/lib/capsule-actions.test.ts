import { describe, expect, it } from 'vitest';
import { allowed, isTransient, templateNamePattern, type CapsuleAction } from './capsule-actions';
import type { CapsuleStatus } from './types';

// The lifecycle buttons follow the API's state machine (docs/api.md): a
// button offered in a state the server refuses would only ever get a 409.
describe('allowed', () => {
  const table: Record<CapsuleStatus, CapsuleAction[]> = {
    pending: ['destroy'],
    starting: ['destroy'],
    running: ['pause', 'snapshot', 'destroy'],
    pausing: ['destroy'],
    paused: ['resume', 'snapshot', 'destroy'],
    resuming: ['destroy'],
    stopped: [],
    missing: ['destroy'],
    error: ['destroy'],
  };
  for (const [status, want] of Object.entries(table) as [CapsuleStatus, CapsuleAction[]][]) {
    it(`offers ${want.join(', ') || 'nothing'} when ${status}`, () => {
      const got = (['pause', 'resume', 'snapshot', 'destroy'] as CapsuleAction[]).filter((a) => allowed(status, a));
      expect(got).toEqual(want);
    });
  }
});

describe('isTransient', () => {
  it('is true only for states that change by themselves', () => {
    expect(['pending', 'starting', 'pausing', 'resuming'].every((s) => isTransient(s as CapsuleStatus))).toBe(true);
    expect(['running', 'paused', 'stopped', 'error', 'missing'].some((s) => isTransient(s as CapsuleStatus))).toBe(false);
  });
});

describe('templateNamePattern', () => {
  it('matches the server rule', () => {
    for (const ok of ['a', 'my-env', 'py3.12_base', '0x', 'a'.repeat(63)]) expect(templateNamePattern.test(ok), ok).toBe(true);
    for (const bad of ['', '-a', '.a', 'A', 'my env', 'a/b', 'a'.repeat(64), 'é']) expect(templateNamePattern.test(bad), bad).toBe(false);
  });
});

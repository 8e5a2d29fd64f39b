import { describe, expect, it } from 'vitest';
import { bytes, cpuOfAllowance, mib, networkSummary, relative, seconds, shortId } from './format';
import { query } from './api';

describe('format', () => {
  it('networkSummary', () => {
    expect(networkSummary({ internet: true, allow: [], deny: [] })).toBe('internet');
    expect(networkSummary({ internet: false, allow: [], deny: [] })).toBe('no internet');
    expect(networkSummary({ internet: true, allow: ['a.com', '1.2.3.0/24'], deny: ['b.a.com'] })).toBe('only 2 allowed, 1 denied');
    expect(networkSummary({ internet: true, allow: [], deny: ['b.com'] })).toBe('internet, 1 denied');
    expect(networkSummary(undefined)).toBe('internet');
  });
  it('cpuOfAllowance: against the capsule\'s vCPUs, not the CPUs its kernel sees', () => {
    // 1 vCPU on a 2-CPU host: one busy core is 50 % of what the kernel sees, 100 % of the allowance.
    expect(cpuOfAllowance(50, 2, 1)).toBe(100);
    expect(cpuOfAllowance(25, 2, 1)).toBe(50);
    expect(cpuOfAllowance(25, 4, 2)).toBe(50);
    expect(cpuOfAllowance(30, 2, 2)).toBe(30);
    // Never above 100 %, never negative; a capsule asking for more than it sees counts what it sees.
    expect(cpuOfAllowance(80, 2, 1)).toBe(100);
    expect(cpuOfAllowance(-1, 2, 1)).toBe(0);
    expect(cpuOfAllowance(50, 2, 4)).toBe(50);
    expect(cpuOfAllowance(NaN, 2, 1)).toBe(0);
  });
  it('bytes', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(1023)).toBe('1023 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(64 * 1024 * 1024)).toBe('64 MiB');
    expect(bytes(null)).toBe('—');
  });
  it('mib', () => {
    expect(mib(512)).toBe('512 MiB');
    expect(mib(2048)).toBe('2 GiB');
    expect(mib(1536)).toBe('1536 MiB');
  });
  it('relative', () => {
    const now = Date.parse('2026-11-29T12:00:00Z');
    expect(relative('2026-11-29T12:00:00Z', now)).toBe('just now');
    expect(relative('2026-11-29T11:58:00Z', now)).toBe('2 minutes ago');
    expect(relative('2026-11-29T09:00:00Z', now)).toBe('3 hours ago');
    expect(relative('2026-11-27T12:00:00Z', now)).toBe('2 days ago');
    expect(relative(null, now)).toBe('—');
  });
  it('seconds', () => {
    expect(seconds(0)).toBe('never');
    expect(seconds(45)).toBe('45 s');
    expect(seconds(300)).toBe('5 min');
    expect(seconds(5400)).toBe('1.5 h');
  });
  it('shortId', () => {
    expect(shortId('0123456789abcdef')).toBe('01234567');
  });
});

describe('query', () => {
  it('skips empty values and repeats arrays', () => {
    expect(query({})).toBe('');
    expect(query({ a: '', b: undefined })).toBe('');
    expect(query({ status: ['running', 'paused'], limit: 10 })).toBe('?status=running&status=paused&limit=10');
    expect(query({ path: '/home/user/a b&c' })).toBe('?path=%2Fhome%2Fuser%2Fa+b%26c');
  });
});

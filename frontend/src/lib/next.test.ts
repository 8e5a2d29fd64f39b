import { describe, expect, it } from 'vitest';
import { safeNext } from './next';

describe('safeNext', () => {
  const origin = 'https://wrenn.example:8080';
  it('keeps paths of this app', () => {
    expect(safeNext('/capsules/abc?tab=files', origin)).toBe('/capsules/abc?tab=files');
    expect(safeNext('/audit?action=capsule.*', origin)).toBe('/audit?action=capsule.*');
  });
  it('falls back for anything that leaves the origin or is no path', () => {
    for (const next of [
      null,
      '',
      'capsules',
      '//evil.example',
      '/\\evil.example',
      '/\t/evil.example',
      '/\n/evil.example',
      'https://evil.example/',
      'javascript:alert(1)',
    ]) {
      expect(safeNext(next, origin), JSON.stringify(next)).toBe('/capsules');
    }
  });
});

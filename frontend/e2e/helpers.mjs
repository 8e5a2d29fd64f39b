// Shared helpers of the dashboard's browser tests (frontend/e2e/*.test.mjs).
// Run by internal/e2e/dashboard_test.go against a real wrenn-cp; see there.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';

export const BASE = required('WRENN_URL').replace(/\/$/, '');
export const OUT = process.env.WRENN_TEST_OUTPUT || path.join(tmpdir(), 'wrenn-dashboard-shots');
mkdirSync(OUT, { recursive: true });

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through \`make test\` (internal/e2e TestDashboard)`);
  return v;
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.WRENN_TEST_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
}

export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
export const rand = (n = 6) => randomBytes(n).toString('hex').slice(0, n);

/** Polls check (which returns a truthy value when done, or throws) until timeout. */
export async function eventually(what, check, timeout = 10_000, every = 100) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` + (last ? `: ${last.message}` : ''));
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A small API client (fetch from node) authenticated with an API key. */
export function apiClient(key) {
  return async function api(method, p, body, want) {
    const res = await fetch(BASE + p, {
      method,
      headers: { 'X-API-Key': key, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (want !== undefined && res.status !== want) {
      throw new Error(`${method} ${p}: status ${res.status}, want ${want}: ${text}`);
    }
    return { status: res.status, json, text };
  };
}

/** Focus is inside el (a locator). */
export function focusInside(loc) {
  return loc.evaluate((el) => el.contains(document.activeElement));
}

export function isFocused(loc) {
  return loc.evaluate((el) => el === document.activeElement);
}

export async function waitHidden(loc, timeout) {
  await loc.waitFor({ state: 'hidden', timeout });
}

export async function waitVisible(loc, timeout) {
  await loc.waitFor({ state: 'visible', timeout });
}

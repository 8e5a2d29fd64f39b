// Shared helpers of the dashboard's browser tests (frontend/e2e/*.test.mjs).
// Run by internal/e2e/dashboard_test.go against a real wrenn-cp; see there.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
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

/**
 * What every open page of browser is doing, one line each, for the message
 * of a failed step: how fast its script answers and whether it still gets
 * animation frames (an action waits for two frames to call an element
 * stable), with the machine's load. A page whose script does not answer is
 * busy; one that answers but gets no frame is not being drawn.
 */
export async function describePages(browser) {
  const within = (promise, ms) =>
    Promise.race([
      promise.then(
        (v) => v,
        (err) => `error: ${String(err?.message ?? err).split('\n')[0]}`,
      ),
      new Promise((r) => setTimeout(() => r(`no answer in ${ms} ms`), ms)),
    ]);
  const lines = [`load average: ${(await readFile('/proc/loadavg', 'utf8').catch(() => '?')).trim()}`];
  for (const ctx of browser.contexts()) {
    for (const q of ctx.pages()) {
      const t0 = Date.now();
      const state = await within(q.evaluate(() => `${document.visibilityState}, focus ${document.hasFocus()}`), 5000);
      const t1 = Date.now();
      const frame = await within(q.evaluate(() => new Promise((r) => requestAnimationFrame(() => r('drawn')))), 5000);
      lines.push(`page ${q.url()}: script answered (${state}) in ${t1 - t0} ms; animation frame: ${frame} after ${Date.now() - t1} ms`);
    }
  }
  return lines.join('\n');
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

// --- accessibility --------------------------------------------------------------

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];

/**
 * Runs axe-core on the page (or only on the elements matching include) and
 * returns its serious and critical violations, one line each: rule id,
 * impact, the element and axe's help. The page must belong to a context
 * created with bypassCSP: the dashboard's CSP (script-src 'self') rightly
 * refuses the injected script everywhere else.
 */
export async function axeViolations(page, include) {
  if (!(await page.evaluate(() => 'axe' in window))) {
    await page.addScriptTag({ path: AXE });
    // No transitions: a colour caught halfway (after a switch to dark) is no colour at all.
    await page.addStyleTag({ content: '*, *::before, *::after { transition: none !important; animation: none !important; }' });
  }
  return page.evaluate(
    async ({ include, tags }) => {
      const r = await window.axe.run(include ? { include: [include] } : document, {
        runOnly: { type: 'tag', values: tags },
        resultTypes: ['violations'],
      });
      const out = [];
      for (const v of r.violations) {
        if (v.impact !== 'serious' && v.impact !== 'critical') continue;
        for (const n of v.nodes) {
          const why = (n.any[0] || n.all[0] || n.none[0])?.message || '';
          out.push(`${v.id} (${v.impact}) ${n.target.join(' ')}: ${v.help}${why ? ` — ${why}` : ''}`);
        }
      }
      return out;
    },
    { include, tags: AXE_TAGS },
  );
}

/**
 * The tables scrolled sideways (a .table-wrap wider inside than out), each as
 * "<first header>…: <inner> > <outer> px"; at 1280 px there should be none, so
 * no column or row action is hidden out of view.
 */
export function tableOverflow(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.table-wrap')]
      .filter((el) => el.scrollWidth > el.clientWidth + 1)
      .map((el) => `${el.querySelector('th')?.textContent?.trim() ?? 'table'}…: ${el.scrollWidth} > ${el.clientWidth} px`),
  );
}

/** The page is no wider than its viewport: nothing scrolls the page sideways. */
export function pageOverflow(page) {
  return page.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const sw = document.documentElement.scrollWidth;
    if (sw <= w) return null;
    // The widest elements that stick out, to say where.
    const culprits = [...document.querySelectorAll('body *')]
      .filter((el) => el.getBoundingClientRect().right > w + 0.5 && !el.closest('.table-wrap, .xterm'))
      .slice(0, 5)
      .map((el) => el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : ''));
    return `scrollWidth ${sw} > ${w}: ${culprits.join(', ')}`;
  });
}

// Browser test of a user who belongs to two teams: they sign in, switch to
// the other team with the sidebar's "Team" select, and work in that team's
// capsule — list, terminal (a WebSocket, which names the team in its query),
// file upload and download (a link, likewise) — then switch back and sign
// out. Run by internal/e2e/dashboard_test.go; see dashboard.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BASE, OUT, launchBrowser, eventually, rand, sha256, waitVisible, waitHidden } from './helpers.mjs';

const password = 'correct horse ' + rand(8);
const owner = { email: `olga-${rand()}@example.com`, name: 'Olga Owner' };
const member = { email: `bo-${rand()}@example.com`, name: 'Bo Member' };

let browser;
let page;
let capsuleId;
const problems = [];

/** A JSON call with a session token (not the browser's cookie). */
async function call(token, method, p, body, want) {
  const res = await fetch(BASE + p, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (want !== undefined && res.status !== want) throw new Error(`${method} ${p}: ${res.status}, want ${want}: ${text}`);
  return text ? JSON.parse(text) : null;
}

async function signup(u) {
  const s = await call('', 'POST', '/v1/auth/signup', { email: u.email, password, name: u.name }, 201);
  u.token = s.token;
  u.team = s.team.id;
}

before(async () => {
  await signup(owner);
  await signup(member);
  // Olga adds Bo to her team and starts a capsule there.
  await call(owner.token, 'POST', '/v1/team/members', { email: member.email, role: 'member' }, 201);
  capsuleId = (await call(owner.token, 'POST', '/v1/capsules', { template: 'minimal' }, 201)).id;

  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      problems.push(`${msg.text()} [${msg.location()?.url}] on ${page.url()}`);
    }
  });
  page.on('pageerror', (err) => problems.push('uncaught: ' + (err.stack || err.message)));
});

after(async () => {
  await browser?.close();
  if (capsuleId) await call(owner.token, 'DELETE', `/v1/capsules/${capsuleId}`).catch(() => {});
});

const rowOf = (id) => page.getByRole('row').filter({ has: page.getByRole('link', { name: id.slice(0, 8), exact: true }) });

test('a member of two teams signs in and switches to the other team', async () => {
  await page.goto(BASE + '/');
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Sign in', exact: true }));
  await page.getByLabel('Email', { exact: true }).fill(member.email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Capsules', exact: true }));

  // Bo's own team has no capsules; Olga's is not listed.
  await waitVisible(page.getByText('No capsules yet'));
  assert.equal(await rowOf(capsuleId).count(), 0, "another team's capsule is listed before switching");

  const select = page.getByRole('combobox', { name: 'Team', exact: true });
  assert.equal(await select.locator('option').count(), 2, 'the team select offers both teams');
  await select.selectOption(owner.team);
  await waitVisible(rowOf(capsuleId), 10_000);
  await eventually('the sidebar names the team acted for', async () => /Olga Owner's team · member/.test(await page.getByRole('navigation', { name: 'Main' }).innerText()));
  await page.screenshot({ path: path.join(OUT, 'teams-switched.png'), fullPage: true });
});

test("the other team's capsule: terminal and files work", async () => {
  await rowOf(capsuleId).getByRole('link').click();
  const header = page.getByRole('region', { name: 'Capsule', exact: true });
  await waitVisible(header);
  assert.equal(await header.locator('[data-status]').getAttribute('data-status'), 'running');

  // Terminal: the WebSocket carries the team in its query.
  const term = page.locator('.xterm:visible').first();
  await waitVisible(term, 15_000);
  await term.click();
  await page.keyboard.type('echo te""am-ok\n');
  await eventually('the command output in the terminal', async () => {
    const rows = (await page.locator('.xterm:visible .xterm-rows').first().innerText()).split('\n').map((s) => s.trim());
    return rows.includes('team-ok');
  }, 15_000);

  // Files: upload (PUT) and download (a link) in that team.
  await page.getByRole('tab', { name: 'Files', exact: true }).click();
  // The button is enabled once the tab has listed its directory.
  const uploadButton = page.getByRole('tabpanel').first().getByRole('button', { name: 'Upload file', exact: true });
  await eventually('the Files tab listed its directory', () => uploadButton.isEnabled(), 15_000);
  const name = `team-${rand()}.bin`;
  const bytes = randomBytes(64 * 1024);
  const src = path.join(OUT, name);
  await writeFile(src, bytes);
  await page.locator('input[type=file][aria-label="Upload file"]').setInputFiles(src);
  const download = page.getByRole('link', { name: `Download ${name}`, exact: true });
  await waitVisible(download, 15_000);
  const [dl] = await Promise.all([page.waitForEvent('download'), download.click()]);
  const got = await readFile(await dl.path());
  assert.equal(sha256(got), sha256(bytes), 'the downloaded file differs from the uploaded one');
});

test('switching back shows only the own team, and signing out ends the session', async () => {
  await page.getByRole('combobox', { name: 'Team', exact: true }).selectOption(member.team);
  // The capsule page of the other team is left for the list.
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Capsules', exact: true }));
  await waitVisible(page.getByText('No capsules yet'));
  assert.equal(await rowOf(capsuleId).count(), 0, "the other team's capsule is still listed after switching back");

  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Sign in', exact: true }));
  // The session is gone on the server too: the cookies were cleared, and a
  // reload stays on the sign-in page.
  await page.reload();
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Sign in', exact: true }));
  await waitHidden(page.getByRole('navigation', { name: 'Main' }), 2000);
});

test('no console errors in the team tests', () => {
  assert.deepEqual(problems, []);
});

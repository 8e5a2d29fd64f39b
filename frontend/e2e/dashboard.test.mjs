// End-to-end tests of the dashboard in Chromium against a real wrenn-cp,
// wrenn-agent and gVisor capsules (started by internal/e2e TestDashboard).
// Elements are found only by role and accessible name, as in
// /work/devstack/CONTRACT.md (copied in the comments below where it matters);
// the status badge by its data-status attribute, which the contract defines.
//
// The tests run in order and share one browser, one page and the user who
// signs up in the first test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BASE, OUT, launchBrowser, eventually, apiClient, sha256, rand, focusInside, isFocused, waitHidden, waitVisible,
  axeViolations, pageOverflow, tableOverflow, describePages,
} from './helpers.mjs';

const WIDE = { width: 1280, height: 800 };
const NARROW = { width: 390, height: 844 };
// Capsule operations run real gVisor checkpoints and restores.
const OP = 90_000;

let browser, context, page;
let api; // the signed-up user's API key client, from the API keys page
const user = { name: 'Grace Tester', email: `e2e-${rand()}@example.com`, password: 'correct horse battery staple' };
const live = new Set(); // capsules to destroy in after()
let shared; // a running capsule for tests 3, 4, 8 and the narrow screenshots

// --- console errors (test 7) ----------------------------------------------
// Every console error and uncaught page error fails the last test, except
// the entries of `allowed`, each with its reason. (Chromium logs every
// non-2xx fetch as a console error; a signed-out visit asks nothing that
// could answer 401, since the app first looks for the session's cookie.)
const problems = [];
const warnings = [];
const allowed = [
  {
    // Test 5 provokes a 409 on purpose to see the message in the dialog;
    // allowed only while that test runs.
    why: 'the duplicate snapshot name test 5 provokes',
    match: (p) => p.during === 'duplicate-snapshot' && /status of 409/.test(p.text) && /\/v1\/snapshots$/.test(p.url),
  },
  {
    // The network test saves a bad entry in the dialog on purpose to see
    // the API's 400 there; allowed only while that save runs.
    why: 'the refused network policy edit the network test provokes',
    match: (p) => p.during === 'refused-network-edit' && /status of 400/.test(p.text) && /\/v1\/capsules\/[^/]+\/network$/.test(p.url),
  },
];
let during = '';
let currentTest = '';

/** test() that records which test is running, for the console report. */
function step(name, opts, fn) {
  test(name, opts, async (t) => {
    currentTest = name;
    try {
      return await fn(t);
    } catch (err) {
      throw await described(err);
    }
  });
}

/** err, with what the browser's pages were doing when it was thrown (once). */
async function described(err) {
  if (err instanceof Error && !err.pagesDescribed && browser) {
    const pages = `\nthe browser's pages at the failure:\n${await describePages(browser)}`;
    err.message += pages;
    if (typeof err.stack === 'string') err.stack += pages; // what node --test prints
    err.pagesDescribed = true;
  }
  return err;
}

function watch(p) {
  p.on('console', (msg) => {
    const loc = msg.location();
    const entry = { text: msg.text(), url: loc?.url || '', page: p.url(), during, test: currentTest };
    if (msg.type() === 'error') problems.push(entry);
    else if (msg.type() === 'warning') warnings.push(entry);
  });
  p.on('pageerror', (err) => problems.push({ text: 'uncaught: ' + (err.stack || err.message), url: '', page: p.url(), during, test: currentTest }));
}

// --- screenshots (test 6) ---------------------------------------------------
let shotN = 0;
async function shot(name) {
  const file = path.join(OUT, `${String(++shotN).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// --- locators ----------------------------------------------------------------
const dialog = (name) => page.getByRole('dialog', { name, exact: true });
const header = () => page.getByRole('region', { name: 'Capsule', exact: true });
const headerButton = (name) => header().getByRole('button', { name, exact: true });
const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });
const h1 = (name) => page.getByRole('heading', { level: 1, name, exact: true });
// The capsule's tab panel: the first one, as the Terminal tab has panels of
// its own inside (one per session, labelled "Terminal 1", …).
const tabPanel = () => page.getByRole('tabpanel').first();
const row = (id) => page.getByRole('row').filter({ has: page.getByRole('link', { name: id.slice(0, 8), exact: true }) });
// <StatusBadge>: the element with data-status (CONTRACT.md).
const badgeIn = (scope) => scope.locator('[data-status]');

async function waitStatus(badge, want, timeout = OP) {
  let seen;
  await eventually(`status ${want}`, async () => (seen = await badge.getAttribute('data-status', { timeout: 2000 })) === want, timeout, 100).catch(
    (err) => {
      throw new Error(`${err.message} (last seen: ${seen})`);
    },
  );
}

async function gotoPage(link, heading) {
  await nav(link).click();
  await waitVisible(h1(heading));
}

async function myCapsuleIds() {
  const r = await api('GET', '/v1/capsules', undefined, 200);
  return r.json.capsules.map((c) => c.id);
}

async function launchByAPI() {
  const r = await api('POST', '/v1/capsules', { template: 'minimal' }, 201);
  live.add(r.json.id);
  return r.json.id;
}

/** The capsule is stopped or gone, in the API. */
async function assertGone(id) {
  await eventually(`capsule ${id} stopped or gone`, async () => {
    const r = await api('GET', `/v1/capsules/${id}`);
    return r.status === 404 || r.json?.status === 'stopped';
  }, 30_000, 250);
  live.delete(id);
}

/** Opens the row's actions menu and picks item. */
async function rowAction(id, item) {
  await page.getByRole('button', { name: `Actions for capsule ${id.slice(0, 8)}`, exact: true }).click();
  const menu = page.getByRole('menu');
  await waitVisible(menu);
  await menu.getByRole('menuitem', { name: item, exact: true }).click();
}

async function menuItems(id) {
  const opener = page.getByRole('button', { name: `Actions for capsule ${id.slice(0, 8)}`, exact: true });
  await opener.click();
  const menu = page.getByRole('menu');
  await waitVisible(menu);
  const names = (await menu.getByRole('menuitem').allInnerTexts()).map((s) => s.trim());
  // Opening moves focus into the menu (a frame later); Escape closes it and
  // gives focus back to its button.
  await eventually('focus in the opened menu', () => focusInside(menu), 3000, 50);
  await page.keyboard.press('Escape');
  await waitHidden(menu, 3000);
  await eventually('focus back on the menu button', () => isFocused(opener), 3000, 50);
  return names;
}

// The three dialogs, used the same way from the list (test 2) and the
// detail page (test 1): the same names, fields and buttons.
async function confirmPause(screenshot) {
  const dlg = dialog('Pause capsule');
  await waitVisible(dlg);
  if (screenshot) await shot('dialog-pause');
  await dlg.getByRole('button', { name: 'Pause', exact: true }).click();
  await waitHidden(dlg, OP);
}

async function confirmSnapshot(name, screenshot) {
  const dlg = dialog('Snapshot capsule');
  await waitVisible(dlg);
  await dlg.getByLabel('Name', { exact: true }).fill(name);
  if (screenshot) await shot('dialog-snapshot');
  await dlg.getByRole('button', { name: 'Create snapshot', exact: true }).click();
  await waitHidden(dlg, OP);
  await waitVisible(page.getByText(`Snapshot ${name} created`), 10_000);
}

async function confirmDestroy(screenshot) {
  const dlg = dialog('Destroy capsule');
  await waitVisible(dlg);
  const destroy = dlg.getByRole('button', { name: 'Destroy', exact: true });
  assert.ok(await destroy.isDisabled(), '"Destroy" must be disabled until the checkbox is checked');
  await dlg.getByRole('checkbox', { name: 'I understand that everything in this capsule will be lost', exact: true }).check();
  assert.ok(await destroy.isEnabled(), '"Destroy" must be enabled once the checkbox is checked');
  if (screenshot) await shot('dialog-destroy');
  await destroy.click();
  await waitHidden(dlg, OP);
}

/**
 * Tab and Shift+Tab never move focus to the page behind the open modal
 * dialog. A native modal <dialog> lets focus pass from its last control to
 * the browser's own UI (the address bar) and from there back to its first;
 * headless Chromium has no such UI and shows that step as focus on <body>.
 * That is allowed; focus on any element outside the dialog is not.
 */
async function assertTabTrapped(dlg, presses = 15) {
  let inside = 0;
  for (let i = 0; i < presses; i++) {
    await page.keyboard.press(i % 5 === 4 ? 'Shift+Tab' : 'Tab');
    const where = await dlg.evaluate((d) => {
      const a = document.activeElement;
      if (d.contains(a)) return 'inside';
      if (!a || a === document.body) return 'browser';
      return a.outerHTML.slice(0, 120);
    });
    if (where === 'inside') inside++;
    else assert.equal(where, 'browser', `Tab press ${i + 1} moved focus out of the dialog to the page behind it`);
  }
  assert.ok(inside >= presses / 2, `focus was in the dialog after only ${inside} of ${presses} Tab presses`);
}

/** Escape closes the dialog and focus goes back to opener. */
async function assertEscapeReturnsFocus(dlg, opener) {
  await page.keyboard.press('Escape');
  await waitHidden(dlg, 5000);
  await eventually('focus back on the button that opened the dialog', () => isFocused(opener), 3000);
}


let signedUp = false;

/**
 * The API key client. From the API keys page (its test); when that test
 * failed, a key is made with the browser's session through the API so that
 * the tests after it still say something about their own pages.
 */
async function ensureApi() {
  if (api) return;
  assert.ok(signedUp, 'needs the user of the sign-up test');
  const r = await page.evaluate(async () => {
    const csrf = document.cookie.split('; ').find((c) => c.startsWith('wrenn_csrf='))?.slice('wrenn_csrf='.length) ?? '';
    const res = await fetch('/v1/api-keys', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': decodeURIComponent(csrf) },
      body: JSON.stringify({ name: 'e2e-fallback' }),
    });
    return { status: res.status, body: await res.text() };
  });
  assert.equal(r.status, 201, `creating an API key through the API: ${r.body}`);
  console.log('note: the API keys page test failed; using a key made through the API');
  api = apiClient(JSON.parse(r.body).key);
}

/** The running capsule of tests 3, 4, 8 and the narrow screenshots. */
async function ensureShared() {
  await ensureApi();
  if (shared && (await api('GET', `/v1/capsules/${shared}`)).json?.status === 'running') {
    if (new URL(page.url()).pathname !== `/capsules/${shared}`) await page.goto(`/capsules/${shared}`);
    return;
  }
  shared = await launchByAPI();
  await page.goto(`/capsules/${shared}`);
}

before(async () => {
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: WIDE, acceptDownloads: true, baseURL: BASE });
  context.setDefaultTimeout(15_000);
  context.on('page', watch);
  page = await context.newPage();
});

after(async () => {
  if (api) {
    for (const id of live) await api('DELETE', `/v1/capsules/${id}`).catch(() => {});
  }
  await browser?.close();
  console.log(`screenshots: ${OUT}`);
});

// 1 ---------------------------------------------------------------------------
step('sign up in the browser', { timeout: 60_000 }, async () => {
  await page.goto('/signup');
  await page.getByLabel('Name', { exact: true }).fill(user.name);
  await page.getByLabel('Email', { exact: true }).fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await shot('signup');
  await page.getByRole('button', { name: 'Create account', exact: true }).click();
  await waitVisible(h1('Capsules'), 20_000);
  signedUp = true;
});

step('create an API key on the API keys page; it is shown once and works', { timeout: 60_000 }, async () => {
  assert.ok(signedUp, 'needs the user of the sign-up test');
  // The key is shown once, in the dialog.
  await gotoPage('API keys', 'API keys');
  const keyName = `e2e-${rand()}`;
  await page.getByRole('button', { name: 'Create API key', exact: true }).click();
  const keyDialog = dialog('Create API key');
  await waitVisible(keyDialog);
  await keyDialog.getByLabel('Name', { exact: true }).fill(keyName);
  // The default scopes are chosen; a scope beyond them can be added, and
  // platform:admin is not offered to a user who is not platform admin.
  const scopeBox = (name) => keyDialog.getByRole('checkbox', { name: new RegExp(`^${name} `) });
  for (const sc of ['capsules', 'exec', 'files', 'snapshots', 'templates']) {
    assert.ok(await scopeBox(sc).isChecked(), `scope ${sc} is chosen by default`);
  }
  assert.equal(await scopeBox('keys:manage').isChecked(), false, 'keys:manage is not chosen by default');
  assert.equal(await scopeBox('platform:admin').count(), 0, 'platform:admin is not offered');
  await scopeBox('team').check();
  await shot('dialog-create-api-key');
  await keyDialog.getByRole('button', { name: 'Create', exact: true }).click();
  const keyInput = keyDialog.getByLabel('API key', { exact: true });
  await waitVisible(keyInput);
  const key = await keyInput.inputValue();
  assert.match(key, /^wrn_/, 'the dialog shows the new key');
  assert.ok(await keyInput.evaluate((el) => el.readOnly), 'the key input is read-only');
  await waitVisible(keyDialog.getByRole('button', { name: 'Copy', exact: true }));
  await shot('dialog-api-key-shown');
  await keyDialog.getByRole('button', { name: 'Done', exact: true }).click();
  await waitHidden(keyDialog);
  await waitVisible(page.getByRole('button', { name: `Delete API key ${keyName}`, exact: true }));
  const keyRow = page.getByRole('row').filter({ hasText: keyName });
  assert.match(await keyRow.innerText(), /capsules[\s\S]*templates[\s\S]*team/, 'the list shows the key\'s scopes');
  api = apiClient(key);
  const me = await api('GET', '/v1/me', undefined, 200);
  assert.equal(me.json.user.email, user.email, 'the key belongs to the user who signed up');
  await api('GET', '/v1/team/members', undefined, 200);
  await api('POST', '/v1/api-keys', { name: 'minted' }, 403);
});

step('launch a capsule from the list, then pause, resume, snapshot and destroy it on its page', { timeout: 300_000 }, async () => {
  await ensureApi();
  // Launch from the list.
  await gotoPage('Capsules', 'Capsules');
  const before = new Set(await myCapsuleIds());
  // An empty list has a second "Launch capsule" button in its empty state;
  // the first is the page's own (next to the heading).
  const launchButton = page.getByRole('button', { name: 'Launch capsule', exact: true }).first();
  await launchButton.click();
  const launch = dialog('Launch capsule');
  await waitVisible(launch);
  await launch.getByLabel('Template', { exact: true }).selectOption('minimal');
  await shot('dialog-launch');
  await launch.getByRole('button', { name: 'Launch', exact: true }).click();
  await waitHidden(launch, OP);
  const id = await eventually('the launched capsule in GET /v1/capsules', async () => (await myCapsuleIds()).find((c) => !before.has(c)), 10_000, 250);
  live.add(id);

  // Its page: from the list's link, unless the dialog went there already.
  if (!page.url().endsWith(`/capsules/${id}`)) {
    await page.getByRole('link', { name: id.slice(0, 8), exact: true }).click();
  }
  await eventually('the detail page URL', () => page.url().endsWith(`/capsules/${id}`));
  await waitVisible(header());
  await waitVisible(header().getByRole('heading', { level: 1, name: id }));
  const badge = badgeIn(header());
  await waitStatus(badge, 'running');
  await shot('detail');

  // Pause.
  assert.ok(await headerButton('Resume').isDisabled(), 'Resume is disabled while running');
  await headerButton('Pause').click();
  await confirmPause(true);
  await waitStatus(badge, 'paused');
  assert.ok(await headerButton('Pause').isDisabled(), 'Pause is disabled while paused');
  await shot('detail-paused');

  // Resume (no confirmation in the contract); the Terminal tab, open all
  // along, works again.
  await headerButton('Resume').click();
  await waitStatus(badge, 'running');
  // Checked here, reported at the end, so that the rest still runs.
  const terminalAfterResume = await runInTerminal('echo r""esumed', 'resumed', 'after the resume').then(() => null, (err) => err);
  if (terminalAfterResume) await shot('detail-terminal-after-resume');

  // Snapshot with a name, then on the Templates page.
  const snap = `e2e-detail-${rand()}`;
  await headerButton('Snapshot').click();
  await confirmSnapshot(snap, true);
  await waitStatus(badge, 'running');
  await gotoPage('Templates', 'Templates');
  await waitVisible(page.getByRole('button', { name: `Launch from ${snap}`, exact: true }));
  await waitVisible(page.getByRole('button', { name: `Delete snapshot ${snap}`, exact: true }));
  await shot('templates');
  // "Launch from" opens the same Launch capsule dialog, with the snapshot chosen.
  const launchFrom = page.getByRole('button', { name: `Launch from ${snap}`, exact: true });
  await launchFrom.click();
  const launchSnap = dialog('Launch capsule');
  await waitVisible(launchSnap);
  assert.equal(await launchSnap.getByLabel('Template', { exact: true }).inputValue(), snap, 'the snapshot is the chosen template');
  await assertEscapeReturnsFocus(launchSnap, launchFrom);

  // Destroy: stopped on the page, or the page goes back to the list.
  await page.goBack();
  await waitVisible(header());
  await waitStatus(badge, 'running');
  await headerButton('Destroy').click();
  await confirmDestroy(true);
  await eventually('the capsule shown stopped, or gone from the list', async () => {
    if (page.url().endsWith(`/capsules/${id}`)) return (await badge.getAttribute('data-status', { timeout: 1000 })) === 'stopped';
    return (await h1('Capsules').isVisible()) && (await page.getByRole('link', { name: id.slice(0, 8), exact: true }).count()) === 0;
  }, 30_000, 200);
  await assertGone(id);
  if (terminalAfterResume) throw terminalAfterResume;
});

// 2 and 5 --------------------------------------------------------------------
step('the list row actions open the same dialogs; an API error stays in the dialog', { timeout: 300_000 }, async () => {
  await ensureApi();
  const id = await launchByAPI();
  await page.goto('/capsules');
  await waitVisible(h1('Capsules'));
  const r = row(id);
  await waitVisible(r);
  const badge = badgeIn(r);
  await waitStatus(badge, 'running', 10_000);
  await shot('list');

  assert.deepEqual((await menuItems(id)).sort(), ['Destroy', 'Pause', 'Snapshot'], 'menu of a running capsule');
  await rowAction(id, 'Pause');
  await confirmPause(false);
  await waitStatus(badge, 'paused');
  assert.deepEqual((await menuItems(id)).sort(), ['Destroy', 'Resume', 'Snapshot'], 'menu of a paused capsule');

  await rowAction(id, 'Resume');
  await waitStatus(badge, 'running');

  const snap = `e2e-list-${rand()}`;
  await rowAction(id, 'Snapshot');
  await confirmSnapshot(snap, false);
  await waitStatus(badge, 'running');

  // 5: the same name again. The server's own message for it:
  const taken = await api('POST', '/v1/snapshots', { capsule_id: id, name: snap }, 409);
  const message = taken.json.error.message;
  assert.ok(message, 'the API explains a taken name');
  during = 'duplicate-snapshot';
  try {
    await rowAction(id, 'Snapshot');
    const dlg = dialog('Snapshot capsule');
    await waitVisible(dlg);
    await dlg.getByLabel('Name', { exact: true }).fill(snap);
    await dlg.getByRole('button', { name: 'Create snapshot', exact: true }).click();
    const alert = dlg.getByRole('alert');
    await waitVisible(alert, OP);
    assert.ok((await alert.innerText()).includes(message), `the dialog shows the server's message ${JSON.stringify(message)}, not ${JSON.stringify(await alert.innerText())}`);
    assert.ok(await dlg.isVisible(), 'the dialog stays open after the error');
    await shot('dialog-snapshot-error');
    await page.keyboard.press('Escape');
    await waitHidden(dlg);
  } finally {
    during = '';
  }
  await waitStatus(badge, 'running', 10_000);

  await rowAction(id, 'Destroy');
  await confirmDestroy(false);
  await eventually('the row shows stopped, or is gone', async () => (await r.count()) === 0 || (await badge.getAttribute('data-status', { timeout: 1000 })) === 'stopped', 30_000, 200);
  await assertGone(id);
});

// 3, 4, 6 and 8 on one capsule --------------------------------------------------

/**
 * Clicks into the open Terminal tab's terminal, types cmd and Enter, and
 * waits for a line that is exactly want (cmd is written so that its echo is
 * not that line: `echo h""i` prints `hi`).
 */
async function runInTerminal(cmd, want, when) {
  await page.getByRole('tab', { name: 'Terminal', exact: true }).click();
  const panel = tabPanel();
  await waitVisible(panel);
  // xterm.js's own DOM (not ours): the screen to click and the rows it renders.
  const term = panel.locator('.xterm').first();
  await waitVisible(term, 20_000);
  await eventually(`a prompt in the terminal ${when}`, async () => /[#$]\s*$/m.test(await panel.locator('.xterm-rows').first().innerText()), 20_000, 200)
    .catch(async (err) => {
      throw new Error(`${err.message}; the tab shows: ${JSON.stringify((await panel.innerText()).slice(0, 300))}`);
    });
  await term.click();
  await page.keyboard.type(cmd);
  await page.keyboard.press('Enter');
  await waitVisible(panel.getByText(want, { exact: true }).first(), 15_000);
}

step('terminal: a command typed in runs in the capsule', { timeout: 120_000 }, async () => {
  await ensureApi();
  shared = await launchByAPI();
  await page.goto(`/capsules/${shared}`);
  await waitStatus(badgeIn(header()), 'running', 20_000);
  await runInTerminal('echo h""i', 'hi', 'of a new capsule');
  await shot('tab-terminal');
});

step('network: the capsule page shows its egress policy and edits it in a dialog', { timeout: 60_000 }, async () => {
  await ensureShared();
  const open = header().getByRole('group', { name: 'Network policy', exact: true });
  await waitVisible(open.getByText('internet', { exact: true }), 10_000);
  await api('PATCH', `/v1/capsules/${shared}/network`, { allow: ['example.com', '*.pkg.dev'], deny: ['203.0.113.7'] }, 200);
  await api('PATCH', `/v1/capsules/${shared}/network`, { allow: ['not a name'] }, 400);
  await page.reload();
  const group = header().getByRole('group', { name: 'Network policy', exact: true });
  await waitVisible(group.getByText('only 2 allowed, 1 denied', { exact: true }), 15_000);
  const allowed = group.getByRole('list', { name: 'Allowed destinations', exact: true });
  assert.match(await allowed.innerText(), /example\.com[\s\S]*\*\.pkg\.dev/);
  assert.match(await group.getByRole('list', { name: 'Denied destinations', exact: true }).innerText(), /203\.0\.113\.7\/32/);
  await shot('capsule-network');

  // Edited in the dialog: a bad entry is refused with the API's words and changes nothing; a good one is saved.
  await group.getByRole('button', { name: 'Edit network policy', exact: true }).click();
  const dlg = page.getByRole('dialog', { name: 'Network policy', exact: true });
  await waitVisible(dlg, 10_000);
  const allowBox = dlg.getByLabel('Allowed destinations', { exact: true });
  assert.equal(await allowBox.inputValue(), 'example.com\n*.pkg.dev', 'the dialog starts from the capsule\'s policy');
  await allowBox.fill('example.com\nnot a name');
  during = 'refused-network-edit';
  try {
    await dlg.getByRole('button', { name: 'Save policy', exact: true }).click();
    await waitVisible(dlg.getByText(/network\.allow: "not a name"/), 10_000);
  } finally {
    during = '';
  }
  assert.equal((await api('GET', `/v1/capsules/${shared}`, undefined, 200)).json.network.allow.length, 2, 'a refused edit changes nothing');
  await allowBox.fill('github.com');
  await dlg.getByLabel('Denied destinations', { exact: true }).fill('');
  await dlg.getByRole('button', { name: 'Save policy', exact: true }).click();
  await waitVisible(group.getByText('only 1 allowed', { exact: true }), 15_000);
  assert.deepEqual((await api('GET', `/v1/capsules/${shared}`, undefined, 200)).json.network, { internet: true, allow: ['github.com'], deny: [] });
  await api('PATCH', `/v1/capsules/${shared}/network`, { internet: true }, 200);
});

step('files: an uploaded file is listed and downloads byte for byte', { timeout: 120_000 }, async () => {
  await ensureShared();
  await page.getByRole('tab', { name: 'Files', exact: true }).click();
  const panel = tabPanel();
  await waitVisible(panel.getByRole('button', { name: 'Upload file', exact: true }), 20_000);
  // Enabled once the tab has listed its directory (the upload's target).
  await eventually('the Files tab listed its directory', () => panel.getByRole('button', { name: 'Upload file', exact: true }).isEnabled(), 15_000);
  const name = `e2e-${rand()}.bin`;
  const bytes = randomBytes(300 * 1024 + 17);
  // The <input type="file"> labelled "Upload file" (the visible button of that name triggers it).
  await panel.getByLabel('Upload file', { exact: true }).and(panel.locator('input[type=file]')).setInputFiles({
    name, mimeType: 'application/octet-stream', buffer: bytes,
  });
  const link = panel.getByRole('link', { name: `Download ${name}`, exact: true });
  await waitVisible(link, 30_000);
  await shot('tab-files');
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  assert.equal(download.suggestedFilename(), name);
  const got = await readFile(await download.path());
  assert.equal(got.length, bytes.length, 'downloaded size');
  assert.equal(sha256(got), sha256(bytes), 'downloaded bytes are the uploaded ones');

  // The folder is in the URL: a reload comes back to it.
  const dir = `e2e dir #${rand()}`;
  await api('POST', `/v1/capsules/${shared}/files/mkdir`, { path: `/home/user/${dir}` }, 200);
  await panel.getByRole('button', { name: 'Refresh', exact: true }).click();
  await panel.getByRole('button', { name: dir, exact: true }).click();
  await eventually('the folder in the URL', async () => new URL(page.url()).searchParams.get('path') === `/home/user/${dir}`, 10_000);
  await page.reload();
  await waitVisible(tabPanel().getByRole('navigation').getByText(dir, { exact: true }), 20_000);
  await tabPanel().getByRole('navigation').getByRole('link', { name: 'user', exact: true }).click();
  await waitVisible(tabPanel().getByRole('button', { name: dir, exact: true }), 10_000);
});

step('metrics and processes tabs show the running capsule', { timeout: 60_000 }, async () => {
  await ensureShared();
  await page.getByRole('tab', { name: 'Metrics', exact: true }).click();
  const panel = tabPanel();
  // Current values as text (CPU %), charts in SVG.
  await eventually('a CPU percentage in the Metrics tab', async () => /\d\s*%/.test(await panel.innerText()), 15_000, 200);
  // CPU is against the capsule's own vCPUs, not the CPUs its kernel sees (the host's).
  const spec = (await api('GET', `/v1/capsules/${shared}`, undefined, 200)).json;
  const vcpuText = `of ${spec.vcpus} vCPU${spec.vcpus === 1 ? '' : 's'}`;
  await eventually(`"${vcpuText}" in the Metrics tab`, async () => (await panel.innerText()).includes(vcpuText), 15_000, 200);
  await shot('tab-metrics');
  // A process started through the API is listed, with its Kill button.
  const bg = await api('POST', `/v1/capsules/${shared}/exec`, { cmd: 'sleep 600', tag: 'e2e-sleep', background: true }, 202);
  await page.getByRole('tab', { name: 'Processes', exact: true }).click();
  await waitVisible(tabPanel().getByRole('table'), 15_000);
  await waitVisible(tabPanel().getByRole('button', { name: `Kill process ${bg.json.pid}`, exact: true }), 15_000);
  await shot('tab-processes');
  await page.getByRole('tab', { name: 'Files', exact: true }).click();
  await waitVisible(tabPanel().getByRole('button', { name: 'Upload file', exact: true }), 15_000);
});

step('the ports tab lists a server in the capsule and opens it through the port proxy', { timeout: 60_000 }, async () => {
  await ensureShared();
  const marker = `e2e port page ${rand()}`;
  await api('PUT', `/v1/capsules/${shared}/files?path=/var/tmp/www/index.html`, marker, 200);
  await api('POST', `/v1/capsules/${shared}/exec`, { cmd: 'httpd -f -p 8080 -h /var/tmp/www', tag: 'e2e-httpd', background: true }, 202);
  await page.getByRole('tab', { name: 'Ports', exact: true }).click();
  const open = tabPanel().getByRole('link', { name: 'Open port 8080', exact: true });
  await waitVisible(open, 15_000);
  assert.ok(!(await tabPanel().innerText()).includes('49983'), "envd's port is not listed");
  const href = await open.getAttribute('href');
  assert.ok(href.endsWith(`/v1/capsules/${shared}/ports/8080/`), `Open links to the path form, got ${href}`);
  await shot('tab-ports');
  // The link works with the dashboard's session cookie.
  const tab = await page.context().newPage();
  try {
    await tab.goto(new URL(href, BASE).toString());
    await eventually('the capsule page through the proxy', async () => (await tab.content()).includes(marker), 10_000);
  } finally {
    await tab.close();
  }
  await page.getByRole('tab', { name: 'Files', exact: true }).click();
  await waitVisible(tabPanel().getByRole('button', { name: 'Upload file', exact: true }), 15_000);
});

step('a pause and a resume through the API show on the open page within 5 s', { timeout: 120_000 }, async () => {
  await ensureShared();
  // On the Files tab, which does not poll: a tab that polls the capsule
  // (Metrics, Processes) may ask in the moment between the pause and the
  // page noticing it and get a 409, which Chromium logs as an error.
  await page.getByRole('tab', { name: 'Files', exact: true }).click();
  await waitVisible(tabPanel().getByRole('button', { name: 'Upload file', exact: true }), 15_000);
  const badge = badgeIn(header());
  await waitStatus(badge, 'running', 5000);
  await api('POST', `/v1/capsules/${shared}/pause`, undefined, 200);
  await waitStatus(badge, 'paused', 5000);
  // The tabs say why they are empty.
  await waitVisible(tabPanel().getByText(/The capsule is paused/), 5000);
  await api('POST', `/v1/capsules/${shared}/resume`, undefined, 200);
  await waitStatus(badge, 'running', 5000);
});

step('keyboard: Escape closes a dialog and gives focus back; Tab stays inside', { timeout: 60_000 }, async () => {
  await ensureShared();
  // On the detail page.
  await page.goto(`/capsules/${shared}`);
  await waitStatus(badgeIn(header()), 'running', 20_000);
  for (const [button, title] of [['Pause', 'Pause capsule'], ['Snapshot', 'Snapshot capsule'], ['Destroy', 'Destroy capsule']]) {
    const opener = headerButton(button);
    await opener.click();
    const dlg = dialog(title);
    await waitVisible(dlg);
    assert.ok(await focusInside(dlg), `focus moves into "${title}" when it opens`);
    await assertTabTrapped(dlg);
    await assertEscapeReturnsFocus(dlg, opener);
  }
  // Nothing happened to the capsule.
  assert.equal((await api('GET', `/v1/capsules/${shared}`, undefined, 200)).json.status, 'running');

  // On the list.
  await page.goto('/capsules');
  const opener = page.getByRole('button', { name: 'Launch capsule', exact: true });
  await opener.click();
  const dlg = dialog('Launch capsule');
  await waitVisible(dlg);
  await assertTabTrapped(dlg, 25);
  await assertEscapeReturnsFocus(dlg, opener);
});

// Accessibility -------------------------------------------------------------------

/**
 * axe-core on every page and dialog, each at 1280 px light, 1280 px dark and
 * 390 px light. The scans run in contexts of their own, created with
 * bypassCSP: axe is an injected script, which the dashboard's CSP
 * (script-src 'self') refuses everywhere else — the other tests keep the
 * real CSP, so that a violation of it still fails them. The signed-in
 * context borrows the session's cookies. Each page is loaded once and
 * scanned in all three modes; it moves between pages and tabs the way a
 * user does (links, tabs), so that axe is injected once per context.
 */
step('accessibility: axe finds nothing serious or critical on any page or dialog', { timeout: 120_000 }, async () => {
  await ensureShared();
  const found = [];
  let scans = 0;
  const began = Date.now();
  const opts = { viewport: WIDE, baseURL: BASE, bypassCSP: true };
  const outCtx = await browser.newContext(opts);
  const inCtx = await browser.newContext({ ...opts, storageState: await context.storageState() });
  try {
    for (const c of [outCtx, inCtx]) {
      c.setDefaultTimeout(15_000);
      c.on('page', watch);
    }
    const modes = [
      { viewport: WIDE, colorScheme: 'light' },
      { viewport: WIDE, colorScheme: 'dark' },
      { viewport: NARROW, colorScheme: 'light' },
    ];
    /**
     * Scans q (or the part matching include) in each mode, and leaves it wide
     * and light. With darkShot, saves a screenshot in dark mode too (the
     * other tests' screenshots are light).
     */
    const scan = async (q, what, include, darkShot) => {
      for (const m of modes) {
        await q.setViewportSize(m.viewport);
        await q.emulateMedia({ colorScheme: m.colorScheme });
        await q.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
        for (const v of await axeViolations(q, include)) found.push(`${what} at ${m.viewport.width}px ${m.colorScheme}: ${v}`);
        scans++;
        if (darkShot && m.colorScheme === 'dark' && m.viewport === WIDE) {
          await q.screenshot({ path: path.join(OUT, `${String(++shotN).padStart(2, '0')}-${darkShot}.png`), fullPage: true });
        }
      }
      await q.setViewportSize(WIDE);
      await q.emulateMedia({ colorScheme: 'light' });
    };
    /** Waits for ready, then for the end of the page's first load (no spinner in main). */
    const settle = async (q, ready) => {
      await waitVisible(ready, 20_000);
      await eventually('the page loaded', async () => (await q.locator('main .spinner').count()) === 0, 15_000, 50);
    };
    const heading = (q, name) => q.getByRole('heading', { level: 1, name, exact: true });

    // Signed out.
    const out = await outCtx.newPage();
    await out.goto('/signin');
    await settle(out, heading(out, 'Sign in'));
    await scan(out, '/signin');
    await out.getByRole('link', { name: 'Create one', exact: true }).click();
    await settle(out, heading(out, 'Create your account'));
    await scan(out, '/signup');

    // Signed in.
    const p = await inCtx.newPage();
    const id8 = shared.slice(0, 8);
    /** Opens a dialog with the button opener, scans it, closes it with Escape. */
    const dialogScan = async (where, opener, title, darkShot) => {
      await opener.click();
      const dlg = p.getByRole('dialog', { name: title, exact: true });
      await waitVisible(dlg);
      await scan(p, `${where}, dialog "${title}"`, 'dialog[open]', darkShot);
      await p.keyboard.press('Escape');
      await waitHidden(dlg);
    };
    const go = async (link, name) => {
      await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: link, exact: true }).click();
      await settle(p, heading(p, name));
    };

    await p.goto('/capsules');
    await settle(p, p.getByRole('link', { name: id8, exact: true }));
    await scan(p, '/capsules');
    await p.getByRole('button', { name: `Actions for capsule ${id8}`, exact: true }).click();
    await waitVisible(p.getByRole('menu'));
    await scan(p, '/capsules, row menu open');
    await p.keyboard.press('Escape');
    await waitHidden(p.getByRole('menu'));
    await dialogScan('/capsules', p.getByRole('button', { name: 'Launch capsule', exact: true }).first(), 'Launch capsule');
    await p.getByLabel('Search capsules', { exact: true }).fill('no-such-capsule');
    await waitVisible(p.getByText('No capsules match'));
    await scan(p, '/capsules, nothing matches');
    await p.getByLabel('Search capsules', { exact: true }).fill('');
    // Stopped capsules too (the earlier tests destroyed some): their rows are muted.
    await p.getByLabel('Status', { exact: true }).selectOption('all');
    await waitVisible(p.locator('tr[data-capsule-id] [data-status="stopped"]').first());
    await scan(p, '/capsules, all statuses', undefined, 'dark-list-all');
    await p.getByLabel('Status', { exact: true }).selectOption('active');

    // The detail page: each tab, and the header's dialogs.
    await p.getByRole('link', { name: id8, exact: true }).click();
    const tabReady = {
      Terminal: (q) => q.locator('.xterm').first(),
      Files: (q) => q.getByRole('button', { name: 'Upload file', exact: true }),
      Metrics: (q) => q.getByRole('tabpanel').getByText(/\d\s*%/).first(),
      Processes: (q) => q.getByRole('tabpanel').getByRole('table'),
    };
    for (const [tab, ready] of Object.entries(tabReady)) {
      await p.getByRole('tab', { name: tab, exact: true }).click();
      await settle(p, ready(p));
      await scan(p, `/capsules/{id}, ${tab} tab`, undefined, tab === 'Terminal' ? 'dark-detail' : undefined);
    }
    const hdr = p.getByRole('region', { name: 'Capsule', exact: true });
    for (const [b, title] of [['Pause', 'Pause capsule'], ['Snapshot', 'Snapshot capsule'], ['Destroy', 'Destroy capsule']]) {
      await dialogScan('/capsules/{id}', hdr.getByRole('button', { name: b, exact: true }), title, b === 'Destroy' ? 'dark-dialog-destroy' : undefined);
    }

    // The other pages.
    await go('Templates', 'Templates');
    await scan(p, '/templates');
    await dialogScan('/templates', p.getByRole('button', { name: /^Launch from / }).first(), 'Launch capsule');
    const delSnap = p.getByRole('button', { name: /^Delete snapshot / }).first();
    if (await delSnap.count()) await dialogScan('/templates', delSnap, 'Delete snapshot');
    await go('API keys', 'API keys');
    await scan(p, '/keys', undefined, 'dark-keys');
    await dialogScan('/keys', p.getByRole('button', { name: 'Create API key', exact: true }), 'Create API key');
    await dialogScan('/keys', p.getByRole('button', { name: /^Delete API key / }).first(), 'Delete API key');
    await go('Team', 'Team');
    await scan(p, '/team');
    await dialogScan('/team', p.getByRole('button', { name: 'Add member', exact: true }), 'Add member');
    await go('Audit log', 'Audit log');
    await scan(p, '/audit');
  } catch (err) {
    throw await described(err); // while its pages are still open
  } finally {
    await outCtx.close();
    await inCtx.close();
  }
  console.log(`axe: ${scans} scans in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  assert.deepEqual(found, [], `axe found ${found.length} serious or critical violations:\n${found.join('\n')}\n`);
});

step('at 1280 px no table is wider than the page (columns and row actions in view)', { timeout: 60_000 }, async () => {
  await ensureShared();
  const wide = [];
  for (const [link, name] of [
    ['Capsules', 'Capsules'],
    ['Templates', 'Templates'],
    ['API keys', 'API keys'],
    ['Team', 'Team'],
    ['Audit log', 'Audit log'],
  ]) {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: link, exact: true }).click();
    await waitVisible(page.getByRole('heading', { level: 1, name, exact: true }));
    await waitVisible(page.getByRole('table').first(), 15_000);
    for (const t of await tableOverflow(page)) wide.push(`${name}: ${t}`);
  }
  assert.deepEqual(wide, [], 'tables wider than the page at 1280 px');
});

step('narrow screens: every page at 390×844, none wider than the screen', { timeout: 60_000 }, async () => {
  await ensureShared();
  const wide = [];
  /** Nothing scrolls the page sideways (tables scroll inside their .table-wrap). */
  const fits = async (q, what) => {
    const o = await pageOverflow(q);
    if (o) wide.push(`${what}: ${o}`);
  };
  await page.setViewportSize(NARROW);
  // Signed out, under the real CSP, in a context of its own.
  const outCtx = await browser.newContext({ viewport: NARROW, baseURL: BASE });
  try {
    outCtx.on('page', watch);
    const out = await outCtx.newPage();
    for (const [url, name] of [['/signin', 'Sign in'], ['/signup', 'Create your account']]) {
      await out.goto(url);
      await waitVisible(out.getByRole('heading', { level: 1, name, exact: true }));
      await fits(out, url);
    }
  } finally {
    await outCtx.close();
  }
  try {
    await page.goto('/capsules');
    await waitVisible(row(shared));
    await fits(page, '/capsules');
    await shot('list-390');
    // The row menu stays at the right edge while the table scrolls, and opens over the rows
    // below: a newer capsule's row is above the shared one.
    const extra = await launchByAPI();
    await waitVisible(row(extra), 15_000);
    const menuBtn = row(extra).getByRole('button', { name: `Actions for capsule ${extra.slice(0, 8)}`, exact: true });
    const box = await menuBtn.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= NARROW.width, `the row menu button is in view at 390 px: ${JSON.stringify(box)}`);
    await menuBtn.click();
    const pauseItem = page.getByRole('menuitem', { name: 'Pause', exact: true });
    await waitVisible(pauseItem);
    const pb = await pauseItem.boundingBox();
    const hit = await page.evaluate(([x, y]) => document.elementFromPoint(x, y)?.closest('[role="menu"]') !== null, [pb.x + pb.width - 8, pb.y + pb.height / 2]);
    assert.ok(hit, 'the open row menu is not covered by the sticky cells of the rows below');
    await page.keyboard.press('Escape');
    await waitHidden(page.getByRole('menu'));
    await api('DELETE', `/v1/capsules/${extra}`, undefined, 204);
    await assertGone(extra);
    await page.goto(`/capsules/${shared}`);
    await waitStatus(badgeIn(header()), 'running', 20_000);
    await waitVisible(tabPanel().locator('.xterm').first(), 20_000);
    await fits(page, '/capsules/{id} (Terminal)');
    await shot('detail-390');
    for (const [tab, ready] of [
      ['Files', () => tabPanel().getByRole('button', { name: 'Upload file', exact: true })],
      ['Metrics', () => tabPanel().getByText(/\d\s*%/).first()],
      ['Processes', () => tabPanel().getByRole('table')],
    ]) {
      await page.getByRole('tab', { name: tab, exact: true }).click();
      await waitVisible(ready(), 15_000);
      await fits(page, `/capsules/{id} (${tab})`);
    }
    for (const [url, ready] of [
      ['/templates', () => page.getByRole('table')],
      ['/keys', () => page.getByRole('table')],
      ['/team', () => page.getByRole('table')],
      ['/audit', () => page.getByRole('table')],
    ]) {
      await page.goto(url);
      await waitVisible(ready());
      await fits(page, url);
    }
    await page.getByRole('button', { name: 'Menu', exact: true }).click();
    await waitVisible(nav('Capsules'));
    await fits(page, 'the open menu');
  } finally {
    await page.setViewportSize(WIDE);
  }
  assert.deepEqual(wide, [], 'pages wider than a 390 px screen');
  await api('DELETE', `/v1/capsules/${shared}`, undefined, 204);
  await assertGone(shared);
});

// 7 -----------------------------------------------------------------------------
step('no console errors or uncaught exceptions in any of the above', () => {
  for (const w of warnings) console.log(`console warning on ${w.page}: ${w.text}`);
  const left = problems.filter((p) => !allowed.some((a) => a.match(p)));
  for (const p of problems) {
    const a = allowed.find((x) => x.match(p));
    if (a) console.log(`allowed console error (${a.why}) on ${p.page}: ${p.text} [${p.url}]`);
  }
  assert.deepEqual(left.map((p) => `in "${p.test}" on ${p.page}: ${p.text}${p.url ? ` [${p.url}]` : ''}`), [], 'console errors');
});

// Browser test of the Hosts page, as the platform admin (the stack's first
// user): the registered host is listed online; "Add host" shows a
// registration token once with the exact agent command; "Regenerate token"
// issues another; the new host is deleted. Run by
// internal/e2e/dashboard_test.go; see dashboard.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { BASE, OUT, launchBrowser, apiClient, eventually, waitVisible, waitHidden, tableOverflow } from './helpers.mjs';

const adminEmail = process.env.WRENN_ADMIN_EMAIL;
const adminPassword = process.env.WRENN_ADMIN_PASSWORD;
const api = apiClient(process.env.WRENN_ADMIN_API_KEY);

let browser;
let page;
let added; // the id of the host the test adds
const problems = [];

before(async () => {
  assert.ok(adminEmail && adminPassword && process.env.WRENN_ADMIN_API_KEY, 'WRENN_ADMIN_EMAIL, _PASSWORD and _API_KEY must be set');
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      problems.push(`${msg.text()} [${msg.location()?.url}] on ${page.url()}`);
    }
  });
  page.on('pageerror', (err) => problems.push('uncaught: ' + (err.stack || err.message)));
});

after(async () => {
  await browser?.close();
  if (added) await api('DELETE', `/v1/hosts/${added}`).catch(() => {});
});

const dialog = (name) => page.getByRole('dialog', { name, exact: true });

/** The registration token the open dialog shows, checked with its command. */
async function shownToken(dlg) {
  const token = await dlg.getByLabel('Registration token', { exact: true }).inputValue();
  assert.match(token, /^wrnreg_\S+$/, 'the registration token');
  const command = (await dlg.locator('pre').innerText()).trim();
  assert.equal(command, `WRENN_CP_URL=${BASE} wrenn-agent --register ${token} --address <this-host-ip>:50051`);
  return token;
}

test('the platform admin sees the host online and adds one', async () => {
  await page.goto(BASE + '/');
  await page.getByLabel('Email', { exact: true }).fill(adminEmail);
  await page.getByLabel('Password', { exact: true }).fill(adminPassword);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts', exact: true }).click();
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Hosts', exact: true }));

  const { json: hosts } = await api('GET', '/v1/hosts', undefined, 200);
  const online = hosts.find((h) => h.status === 'online');
  assert.ok(online, 'the stack has an online host');
  const row = page.getByRole('row').filter({ hasText: online.hostname });
  await eventually('the host listed online', async () => (await row.locator('[data-status]').getAttribute('data-status')) === 'online');
  await page.screenshot({ path: path.join(OUT, 'hosts.png'), fullPage: true });
  // At 1280 px the whole table fits: the row actions are not scrolled out of view.
  assert.deepEqual(await tableOverflow(page), [], 'the hosts table is wider than the page at 1280 px');

  await page.getByRole('button', { name: 'Add host', exact: true }).click();
  const dlg = dialog('Add host');
  await waitVisible(dlg);
  await dlg.getByRole('button', { name: 'Create', exact: true }).click();
  await waitVisible(dlg.getByLabel('Registration token', { exact: true }), 10_000);
  const token = await shownToken(dlg);
  await page.screenshot({ path: path.join(OUT, 'dialog-add-host.png') });
  await dlg.getByRole('button', { name: 'Done', exact: true }).click();
  await waitHidden(dlg, 5000);

  const { json: after } = await api('GET', '/v1/hosts', undefined, 200);
  const fresh = after.filter((h) => !hosts.some((o) => o.id === h.id));
  assert.equal(fresh.length, 1, 'one host was added');
  added = fresh[0].id;
  assert.equal(fresh[0].status, 'pending');
  // The token was shown, not stored: it is not in the API's answer.
  assert.ok(!JSON.stringify(after).includes(token), 'the registration token is listed by the API');
});

test('a new token for the added host, then deleting it', async () => {
  const id8 = added.slice(0, 8);
  await page.getByRole('button', { name: `Regenerate token for ${id8}`, exact: true }).click();
  const dlg = dialog('Regenerate registration token');
  await waitVisible(dlg);
  await dlg.getByRole('button', { name: 'Regenerate', exact: true }).click();
  await waitVisible(dlg.getByLabel('Registration token', { exact: true }), 10_000);
  await shownToken(dlg);
  await dlg.getByRole('button', { name: 'Done', exact: true }).click();
  await waitHidden(dlg, 5000);

  await page.getByRole('button', { name: `Delete host ${id8}`, exact: true }).click();
  const del = dialog('Delete host');
  await waitVisible(del);
  await del.getByRole('button', { name: 'Delete', exact: true }).click();
  await waitHidden(del, 10_000);
  await eventually('the deleted host gone from the page', async () => (await page.getByRole('button', { name: `Delete host ${id8}`, exact: true }).count()) === 0);
  const { status } = await api('GET', `/v1/hosts/${added}`);
  assert.equal(status, 404, 'the deleted host is still in the API');
  added = undefined;
});

test('no console errors in the hosts tests', () => {
  assert.deepEqual(problems, []);
});

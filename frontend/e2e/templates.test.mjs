// Browser test of template builds on the Templates page, as the platform
// admin: "Build template" starts a recipe build on minimal, the build view
// follows it live (progress bar moving through the steps, log lines
// arriving while it runs) to success, and the new template is listed. A
// second build with a failing step shows the step's output and leaves no
// template. Run by internal/e2e/dashboard_test.go; see dashboard.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { BASE, OUT, launchBrowser, apiClient, eventually, waitVisible, waitHidden, rand } from './helpers.mjs';

const adminEmail = process.env.WRENN_ADMIN_EMAIL;
const adminPassword = process.env.WRENN_ADMIN_PASSWORD;
const api = apiClient(process.env.WRENN_ADMIN_API_KEY);

let browser;
let page;
const made = [];
const problems = [];
let refusing = false;

before(async () => {
  assert.ok(adminEmail && adminPassword && process.env.WRENN_ADMIN_API_KEY, 'WRENN_ADMIN_EMAIL, _PASSWORD and _API_KEY must be set');
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // Chromium logs every non-2xx fetch: the refused reference test
    // provokes one 400 of POST /v1/templates on purpose.
    if (refusing && /status of 400/.test(msg.text()) && /\/v1\/templates$/.test(msg.location()?.url || '')) return;
    problems.push(`${msg.text()} [${msg.location()?.url}] on ${page.url()}`);
  });
  page.on('pageerror', (err) => problems.push('uncaught: ' + (err.stack || err.message)));
});

after(async () => {
  await browser?.close();
  for (const name of made) await api('DELETE', `/v1/snapshots/${name}`).catch(() => {});
});

const dialog = (name) => page.getByRole('dialog', { name, exact: true });

/** Opens "Build template", names the build and (when given) sets the recipe. */
async function startBuild(name, recipe) {
  await page.getByRole('button', { name: 'Build template', exact: true }).click();
  const dlg = dialog('Build template');
  await waitVisible(dlg);
  await dlg.getByLabel('Template name', { exact: true }).fill(name);
  if (recipe) await dlg.getByLabel('Recipe (JSON)', { exact: true }).fill(JSON.stringify(recipe, null, 2));
  await dlg.getByRole('button', { name: 'Build', exact: true }).click();
  await waitHidden(dlg, 15_000);
}

test('a recipe build followed live to success', async () => {
  await page.goto(BASE + '/');
  await page.getByLabel('Email', { exact: true }).fill(adminEmail);
  await page.getByLabel('Password', { exact: true }).fill(adminPassword);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Templates', exact: true }).click();
  await waitVisible(page.getByRole('heading', { level: 1, name: 'Templates', exact: true }));

  const name = 'e2e-recipe-' + rand(4);
  made.push(name);
  await startBuild(name); // the dialog's example recipe, on minimal
  const view = page.getByRole('region', { name: `Build of ${name}` });
  await waitVisible(view, 15_000);
  const bar = view.getByRole('progressbar', { name: 'Build progress' });
  const log = view.getByRole('log', { name: 'Build log' });

  // Follow it: the bar's values and whether lines came while it ran.
  const seen = new Set();
  let linesWhileRunning = 0;
  const status = await eventually(
    'the build to end',
    async () => {
      seen.add(Number(await bar.getAttribute('aria-valuenow')));
      const st = await view.locator('[data-build-status]').getAttribute('data-build-status', { timeout: 1000 }).catch(() => null);
      if (st === 'running') linesWhileRunning = Math.max(linesWhileRunning, (await log.innerText()).split('\n').filter(Boolean).length);
      return st && st !== 'running' ? st : false;
    },
    120_000,
    50,
  );
  assert.equal(status, 'succeeded', 'the build did not succeed: ' + (await view.innerText()));
  await page.screenshot({ path: path.join(OUT, 'template-build.png'), fullPage: true });
  assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  const between = [...seen].filter((v) => v > 0 && v < 100);
  assert.ok(between.length >= 1, `the progress bar never showed a step in between: ${[...seen].join(', ')}`);
  assert.ok(linesWhileRunning >= 2, `log lines did not stream while the build ran (${linesWhileRunning})`);
  const text = await log.innerText();
  for (const want of ['step 1/7: start a capsule of minimal', 'RUN sh hello.sh', 'hello from my template', 'snapshot the capsule']) {
    assert.ok(text.includes(want), `the build log lacks ${JSON.stringify(want)}:\n${text}`);
  }
  // The new template is in the table, the team's own, deletable.
  const row = page.locator(`tr[data-template="${name}"]`);
  await eventually('the built template in the table', async () => (await row.count()) === 1, 15_000);
  await waitVisible(row.getByRole('button', { name: `Delete snapshot ${name}`, exact: true }));

  // A late watcher (a reload with ?build=) sees the whole log again.
  await page.reload();
  const again = page.getByRole('region', { name: `Build of ${name}` });
  await waitVisible(again, 15_000);
  await eventually('the replayed log', async () => (await again.getByRole('log').innerText()).includes('hello from my template'), 15_000);
});

test('a failing step fails the build with its output and leaves no template', async () => {
  await page.getByRole('region', { name: /^Build of / }).getByRole('button', { name: 'Close', exact: true }).click();
  const name = 'e2e-broken-' + rand(4);
  await startBuild(name, { base: 'minimal', steps: [{ run: 'echo the cause of it >&2; exit 7' }] });
  const view = page.getByRole('region', { name: `Build of ${name}` });
  await waitVisible(view, 15_000);
  const status = await eventually(
    'the build to end',
    async () => {
      const st = await view.locator('[data-build-status]').getAttribute('data-build-status', { timeout: 1000 }).catch(() => null);
      return st && st !== 'running' ? st : false;
    },
    120_000,
    100,
  );
  assert.equal(status, 'failed', 'the build did not fail: ' + (await view.innerText()));
  const alert = await view.getByRole('alert').innerText();
  assert.match(alert, /exit code 7/);
  assert.match(alert, /the cause of it/);
  const { json: templates } = await api('GET', '/v1/templates', undefined, 200);
  assert.ok(!templates.some((t) => t.name === name), 'a failed build left a template');
});

test('an image reference from a registry the operator did not allow is refused in the dialog', async () => {
  await page.getByRole('button', { name: 'Build template', exact: true }).click();
  const dlg = dialog('Build template');
  await waitVisible(dlg);
  await dlg.getByLabel('Template name', { exact: true }).fill('e2e-ref-' + rand(4));
  await dlg.getByLabel('Image reference', { exact: true }).check();
  await dlg.getByLabel('Image', { exact: true }).fill('registry.invalid/some/image:1');
  refusing = true;
  await dlg.getByRole('button', { name: 'Build', exact: true }).click();
  // The control plane's own 400, shown where the user is: the dialog stays.
  await eventually('the refusal', async () => /image/i.test(await dlg.getByRole('alert').innerText().catch(() => '')), 15_000);
  refusing = false;
  await dlg.getByRole('button', { name: 'Cancel', exact: true }).click();
  await waitHidden(dlg);
  const { json: builds } = await api('GET', '/v1/templates/builds', undefined, 200);
  assert.ok(!builds.some((b) => b.name.startsWith('e2e-ref-')), 'a refused reference left a build');
});

test('no console errors in the template tests', () => {
  assert.deepEqual(problems, []);
});

// Browser tests of the web console (/console) in headless Chromium, driven by playwright-core.
// tests/it/console.rs starts a server, a proxy and an upstream, files two approval requests
// (the agent asks for two gated grants), and runs this script with:
//   CONSOLE_URL   the server's base URL          ADMIN_KEY, READER_KEY  API keys
//   PROXY, CACERT the proxy and its CA, for the agent's retries through curl
//   APPROVE_GRANT, APPROVE_HEADER  the grant to approve, and the header that uses it
//   DENY_GRANT, DENY_REASON        the grant to deny, and why
//   SECRET_VALUE  a value no page may show       SHOTS  where screenshots go
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
// It prints one JSON line of measurements and exits non-zero on the first failed check.
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('CONSOLE_URL');
const shots = env('SHOTS');
const secretValue = env('SECRET_VALUE');
const results = {};

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function signIn(browser, key) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/console/login`);
  await page.fill('input[name=key]', key);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check(!page.url().includes('/console/login'), `signed in (at ${page.url()})`);
  return { context, page };
}

/// No page may hold a secret value or the key it was opened with.
async function clean(page, key) {
  const html = await page.content();
  check(!html.includes(secretValue), `no secret value on ${page.url()}`);
  check(!html.includes(key), `the key is not echoed on ${page.url()}`);
}

/// The agent's request through the proxy: its HTTP status.
function agentCall(header, path) {
  const out = execFileSync('curl', [
    '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10',
    '--proxy', env('PROXY'), '--cacert', env('CACERT'), '-H', header, `https://api.openai.com${path}`,
  ]);
  return Number(out.toString().trim());
}

async function pendingLink(page, grant) {
  const row = page.locator('table.pending tr', { hasText: grant });
  check((await row.count()) === 1, `one pending request for ${grant}`);
  return row.locator('a').first();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const admin = env('ADMIN_KEY');
  // Sign in; the approvals page lists both pending requests.
  const { context, page } = await signIn(browser, admin);
  await page.goto(`${base}/console/approvals`);
  check((await page.locator('table.pending tr').count()) === 3, 'two pending requests (and the header row)');
  await page.screenshot({ path: `${shots}/approvals.png`, fullPage: true });
  await clean(page, admin);

  // Approve one: the agent, retrying, gets its secret injected soon after.
  await (await pendingLink(page, env('APPROVE_GRANT'))).click();
  await page.fill('form.approve input[name=comment]', 'ticket OPS-1');
  await Promise.all([page.waitForNavigation(), page.click('form.approve button')]);
  const approvedAt = Date.now();
  check((await page.textContent('#status')) === 'approved', 'the request shows approved');
  let status = 0;
  while (Date.now() - approvedAt < 10000) {
    status = agentCall(env('APPROVE_HEADER'), '/v1/after-approval');
    if (status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  results.inject_ms = Date.now() - approvedAt;
  check(status === 200, `the agent got through after approval (last status ${status})`);

  // Deny the other, with a reason.
  await page.goto(`${base}/console/approvals`);
  await (await pendingLink(page, env('DENY_GRANT'))).click();
  await page.fill('form.deny input[name=reason]', env('DENY_REASON'));
  await Promise.all([page.waitForNavigation(), page.click('form.deny button')]);
  check((await page.textContent('#status')) === 'denied', 'the request shows denied');

  // The audit page: the chain verifies; a filter by type shows only that type.
  await page.goto(`${base}/console/audit`);
  check((await page.textContent('#chain')).includes('verified'), 'the chain verifies');
  check((await page.locator('table.audit tr.refused').count()) > 0, 'refusals are highlighted');
  await page.fill('form.filters input[name=type]', 'approval.deny');
  await Promise.all([page.waitForNavigation(), page.click('form.filters button')]);
  check(page.url().includes('type=approval.deny'), 'the filter is in the URL');
  const types = await page.locator('table.audit tr td:nth-child(3)').allTextContents();
  check(types.length === 1 && types[0] === 'approval.deny', `only approval.deny records: ${types}`);
  await page.goto(`${base}/console/audit`);
  await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });
  await clean(page, admin);

  // Secrets: metadata and versions, never a value.
  await page.goto(`${base}/console/secrets`);
  await page.screenshot({ path: `${shots}/secrets.png`, fullPage: true });
  await clean(page, admin);
  await page.locator('table.secrets a').first().click();
  check((await page.locator('table.versions tr').count()) >= 2, 'versions are listed');
  await clean(page, admin);
  for (const p of ['agents', 'tokens']) {
    await page.goto(`${base}/console/${p}`);
    await clean(page, admin);
  }

  // A form posted without its CSRF token is refused, and nothing is revoked.
  await page.goto(`${base}/console/tokens`);
  const revokes = page.locator('form[action$="/revoke"]');
  const before = await revokes.count();
  check(before > 0, 'a token to revoke');
  await revokes.first().evaluate((form) => form.querySelector('input[name=csrf]').remove());
  const [refused] = await Promise.all([page.waitForNavigation(), revokes.first().locator('button').click()]);
  check(refused.status() === 403, `a form without its CSRF token is refused (${refused.status()})`);
  await page.goto(`${base}/console/tokens`);
  check((await page.locator('form[action$="/revoke"]').count()) === before, 'nothing was revoked');
  await context.close();

  // A reader key: no approvals page, in the navigation or by its URL.
  const reader = env('READER_KEY');
  const r = await signIn(browser, reader);
  check((await r.page.locator('nav a', { hasText: 'Approvals' }).count()) === 0, 'no approvals link for a reader');
  const resp = await r.page.goto(`${base}/console/approvals`);
  check(resp.status() === 403, `a reader gets 403 on the approvals page (${resp.status()})`);
  await r.page.goto(`${base}/console/secrets`);
  await clean(r.page, reader);
  await r.context.close();
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}

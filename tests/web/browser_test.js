// browser_test.js -- rrpc web's dashboard in a real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core over CDP).
//
// Run by test_web_browser.sh, which starts Redis, the C, Python and Ruby
// calc servers, two rrpc web instances (one read-write, one read-only with
// a token) and seeds the dead letters.  Environment:
//   WEB_RW        http://127.0.0.1:PORT of the read-write instance
//   WEB_RO        the read-only one, which needs TOKEN
//   TOKEN         its token
//   SERVICES      the services the overview must list (space separated)
//   SCREENSHOT    if set, where to save a PNG of the overview
// Prints "ok   ..." / "FAIL ..." lines and the closing "N passed, N failed".
'use strict';
const { chromium } = require('playwright-core');

const env = (k) => {
  if (!process.env[k]) throw new Error('missing ' + k);
  return process.env[k];
};
let passed = 0, failed = 0;
function check(name, cond, detail) {
  if (cond) { passed++; console.log('ok   ' + name); }
  else { failed++; console.log('FAIL ' + name + (detail !== undefined ? ': ' + JSON.stringify(detail) : '')); }
}

async function ready(page) {
  await page.waitForSelector('body[data-ready="1"]', { timeout: 15000 });
}

async function main() {
  // A fresh profile (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 720 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await context.newPage();
  const cspViolations = [], pageErrors = [], offsite = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.hostname !== '127.0.0.1') offsite.push(r.url());
  });
  page.on('dialog', (d) => d.accept()); // the confirmations

  // 1. The overview lists every service.
  const rw = env('WEB_RW');
  await page.goto(rw + '/');
  await ready(page);
  const listed = await page.$$eval('#services tbody tr', (rows) => rows.map((r) => r.dataset.service));
  for (const s of env('SERVICES').split(' '))
    check('overview lists ' + s, listed.includes(s), listed);
  const health = await page.$$eval('#services tbody tr', (rows) =>
    rows.map((r) => r.children[1].textContent));
  check('overview: every service is healthy', health.length > 0 && health.every((h) => h === 'ok'), health);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });

  // 2. A dead letter requeued by a click (the shell then reads its answer).
  await page.goto(rw + '/services/calc');
  await ready(page);
  const before = await page.$$eval('#dead tr.dead', (r) => r.length);
  check('calc has the seeded dead letter', before === 1, before);
  await page.click('#requeue');
  await page.waitForSelector('#no-dead', { timeout: 10000 }).catch(() => null);
  check('requeue by a click empties the dead letters', (await page.$('#no-dead')) !== null);
  const workers = await page.$$eval('#workers tbody tr', (r) => r.length);
  check('service page lists the worker', workers >= 1, workers);

  // 2a. One of calc_rb's two dead letters requeued by its row's button
  // (the shell then checks that it, and only it, was answered).
  await page.goto(rw + '/services/calc_rb');
  await ready(page);
  const two = await page.$$eval('#dead tr.dead td.msg', (c) => c.map((x) => x.textContent));
  check('calc_rb has its two seeded dead letters', two.length === 2, two);
  const buttonsPerRow = await page.$$eval('#dead tr.dead button.requeue-one', (b) => b.length);
  check('each dead letter row has a Requeue button', buttonsPerRow === 2, buttonsPerRow);
  await page.click('#dead tr.dead:nth-child(2) button.requeue-one');
  // Polled with $$eval: waitForFunction's polling evaluates a string, which the CSP refuses.
  for (let t = 0; t < 100 && (await page.$$eval('#dead tr.dead', (r) => r.length)) !== 1; t++)
    await page.waitForTimeout(100);
  const one = await page.$$eval('#dead tr.dead td.msg', (c) => c.map((x) => x.textContent));
  check('requeue one by a click leaves the other dead letter', one.length === 1 && one[0].includes('[1,100]'), one);

  // 2b. Every language's worker on its service page, with its version.
  for (const [service, version] of [['calc_py', 'python-'], ['calc_rb', 'ruby-'], ['calc_js', 'node-']]) {
    if (!env('SERVICES').split(' ').includes(service)) continue;
    await page.goto(rw + '/services/' + service);
    await ready(page);
    const rows = await page.$$eval('#workers tbody tr', (r) => r.map((x) => x.textContent));
    check(service + ': its page lists its ' + version + ' worker', rows.length === 1 && rows[0].includes(version), rows);
  }

  // 3. A hostile message renders as text.
  await page.goto(rw + '/services/calc_py');
  await ready(page);
  const msg = await page.$$eval('#dead td.msg', (c) => c.map((x) => x.textContent));
  check('hostile message shown as text', msg.some((t) => t.includes('<img src=x onerror=')), msg);
  const reason = await page.$$eval('#dead td.reason', (c) => c.map((x) => x.textContent));
  check('hostile reason shown as text', reason.some((t) => t.includes('<script>')), reason);
  await page.click('#dead button.inspect');
  const inspected = await page.textContent('#inspect');
  check('inspect shows the record as text', inspected.includes('onerror='), inspected);
  const injected = await page.evaluate(() => ({
    imgs: document.querySelectorAll('main img, main script').length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
  }));
  check('no markup from Redis became elements, nothing ran', injected.imgs === 0 && injected.pwned === null, injected);

  // 4. The call console.
  await page.fill('#c-method', 'add');
  await page.fill('#c-params', '[2, 3]');
  await page.click('#c-send');
  // Polled from here, as above: waitForFunction's polling would evaluate a string.
  for (let t = 0; t < 100 && !/"result"/.test(await page.textContent('#c-out')); t++)
    await page.waitForTimeout(100);
  const answer = await page.textContent('#c-out');
  check('call console: add [2, 3] answers 5', /"result":\s*5\b/.test(answer), answer);

  // 5. Read-only, behind a token: in with ?token= (a cookie), no buttons, POST refused.
  const ro = env('WEB_RO');
  const denied = await page.goto(ro + '/api/overview');
  check('read-only instance without the token: 401', denied.status() === 401, denied.status());
  await page.goto(ro + '/services/calc?token=' + encodeURIComponent(env('TOKEN')));
  await ready(page);
  check('token cookie lets the page in (token gone from the URL)', !page.url().includes('token='), page.url());
  const buttons = await page.$$eval('button', (b) => b.length);
  check('read-only: no buttons', buttons === 0, buttons);
  await page.goto(ro + '/services/calc_rb');
  await ready(page);
  const roRows = await page.$$eval('#dead tr.dead', (r) => r.length);
  const roButtons = await page.$$eval('button.requeue-one, #requeue, #purge', (b) => b.length);
  check('read-only: a dead letter row has no Requeue button', roRows === 1 && roButtons === 0, [roRows, roButtons]);
  const refused = await page.evaluate(async () => {
    const r = await fetch('/api/services/calc/purge', { method: 'POST', headers: { 'X-RRPC-CSRF': 'x' } });
    return r.status;
  });
  check('read-only: a POST is refused (403)', refused === 403, refused);

  // 6. A change without the CSRF token is refused on the read-write instance.
  await page.goto(rw + '/');
  const noCsrf = await page.evaluate(async () => (await fetch('/api/services/calc/purge', { method: 'POST' })).status);
  check('POST without the CSRF header: 403', noCsrf === 403, noCsrf);

  check('no CSP violation', cspViolations.length === 0, cspViolations);
  check('no script error', pageErrors.length === 0, pageErrors);
  check('nothing fetched from the network', offsite.length === 0, offsite);
  await context.close();
}

main()
  .catch((e) => { failed++; console.log('FAIL browser test: ' + (e && e.stack ? e.stack : e)); })
  .finally(() => {
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 && passed > 0 ? 0 : 1);
  });

// Browser test of the Roster operator console (CONTRACT §7).
//
// Drives Debian's chromium through playwright-core against a running server:
//
//   cd tests/browser && npm ci
//   ROSTER_BASE=http://127.0.0.1:18080 ROSTER_CLIENT_ID=… ROSTER_CLIENT_SECRET=… \
//   ROSTER_USER=<user id with a parent, children and ≥ 5 events> ROSTER_SEARCH=<text that finds it> \
//   [ROSTER_WEBHOOK_URL=<URL of an enabled endpoint with a delivered delivery>] \
//   [ROSTER_SCREENSHOTS=/some/dir] [CHROMIUM=/usr/bin/chromium] node tests/browser/console.mjs
//
// It uses accessible locators only (labels, roles, text). It fails if the page
// asks any other origin, keeps cookies or Web Storage, leaks the token, trips
// the CSP, throws, or interprets an API value as markup. Exit code 0 = pass.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = process.env;
const missing = ['ROSTER_BASE', 'ROSTER_CLIENT_ID', 'ROSTER_CLIENT_SECRET', 'ROSTER_USER', 'ROSTER_SEARCH']
  .filter((name) => !env[name]);
if (missing.length) {
  console.error(`FAIL: missing environment variable(s): ${missing.join(', ')}`);
  process.exit(1);
}
const BASE = env.ROSTER_BASE.replace(/\/+$/, '');
const ORIGIN = new URL(BASE).origin;
const CLIENT_ID = env.ROSTER_CLIENT_ID;
const SECRET = env.ROSTER_CLIENT_SECRET;
const USER = env.ROSTER_USER;
const SEARCH = env.ROSTER_SEARCH;
const WEBHOOK_URL = env.ROSTER_WEBHOOK_URL || '';
const SHOTS = env.ROSTER_SCREENSHOTS || '';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';

const fullName = (u) => [u.first_name, u.last_name].filter((v) => typeof v === 'string' && v.trim()).join(' ') || '(no name)';
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}
let stepNo = 0;
async function step(title, fn) {
  stepNo += 1;
  try {
    const note = await fn();
    console.log(`ok   ${String(stepNo).padStart(2)}  ${title}${note ? ` — ${note}` : ''}`);
  } catch (err) {
    throw new Failure(`step ${stepNo} "${title}": ${err.message.split('\n').slice(0, 3).join(' | ')}`);
  }
}
const warn = (msg) => console.log(`warn      ${msg}`);

/** Ground truth from the API itself (these requests come from Node, not the page). */
async function groundTruth() {
  const tokenRes = await fetch(`${BASE}/v1/oauth/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: SECRET }),
  });
  check(tokenRes.ok, `the credentials do not work against ${BASE} (token route answered ${tokenRes.status})`);
  const { access_token: token } = await tokenRes.json();
  const get = async (path) => {
    const res = await fetch(BASE + path, { headers: { authorization: `Bearer ${token}`, 'x-appid': CLIENT_ID } });
    check(res.ok, `GET ${path} answered ${res.status}`);
    return res.json();
  };
  const wrong = await fetch(`${BASE}/v1/oauth/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: `${SECRET}-wrong` }),
  });
  const wrongBody = await wrong.json().catch(() => ({}));
  check(wrong.status === 401 && wrongBody.detail, 'a wrong secret should give 401 with a detail');
  const user = await get(`/v1/users/${USER}`);
  const rel = await get(`/v1/users/${USER}/relationships`);
  const cards = await get(`/v1/users/${USER}/cards?limit=100`);
  const events = [];
  for (let after = null, page = 0; page < 50; page++) {
    const res = await get(`/v1/users/${USER}/events?limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    events.push(...res.data);
    if (!res.has_more) break;
    after = res.next_cursor;
  }
  const endpoints = [];
  for (let after = null, page = 0; page < 10; page++) {
    const res = await get(`/v1/webhook-endpoints?limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    endpoints.push(...res.data);
    if (!res.has_more) break;
    after = res.next_cursor;
  }
  return { user, rel, cards: cards.data, events, endpoints, wrongDetail: wrongBody.detail, get };
}

/** What the console shows for an endpoint's event types and state (CONTRACT §7, §9). */
const eventTypesText = (types) => (types === null || types === undefined ? 'all event types'
  : types.length ? types.join('') : 'no event types');
const endpointStateText = (e) => (!e.disabled ? 'enabled' : e.disabled_reason ? `disabled (${e.disabled_reason})` : 'disabled');

/** A table row's cells as {column header: text} (textContent: what the DOM holds, not its CSS case). */
async function rowCells(table, row) {
  const headers = await table.getByRole('columnheader').allTextContents();
  const cells = await row.getByRole('cell').allTextContents();
  return Object.fromEntries(headers.map((header, i) => [header, (cells[i] ?? '').trim()]));
}

async function main() {
  const truth = await groundTruth();
  const name = fullName(truth.user);
  const ancestors = truth.rel.ancestors.slice().sort((a, b) => a.depth - b.depth);
  const children = truth.rel.descendants.filter((d) => d.parent_user_id === USER);
  check(truth.events.length >= 2, `ROSTER_USER needs a history of events (it has ${truth.events.length})`);
  if (!ancestors.length) warn('ROSTER_USER has no parent: the ancestor checks are skipped');
  if (!children.length) warn('ROSTER_USER has no children: the descendant checks are skipped');
  if (truth.events.length < 5) warn(`ROSTER_USER has only ${truth.events.length} events (5 or more expected)`);
  const hook = WEBHOOK_URL ? truth.endpoints.find((e) => e.url === WEBHOOK_URL) : null;
  if (WEBHOOK_URL) check(hook, `no webhook endpoint has the URL ROSTER_WEBHOOK_URL=${WEBHOOK_URL}`);
  else warn('ROSTER_WEBHOOK_URL is not set: the webhook delivery checks are skipped');
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });

  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);

    const requests = [];
    const problems = [];
    let browserToken = null;
    context.on('request', (req) => requests.push(req.url()));
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('dialog', (d) => { problems.push(`a dialog opened: ${d.message()}`); d.dismiss().catch(() => {}); });
    page.on('console', (msg) => {
      if (/Content Security Policy/i.test(msg.text())) problems.push(`CSP violation: ${msg.text()}`);
    });
    page.on('response', async (res) => {
      if (res.url().endsWith('/v1/oauth/token') && res.status() === 200) {
        browserToken = (await res.json().catch(() => ({}))).access_token || browserToken;
      }
    });
    const shot = async (file) => { if (SHOTS) await page.screenshot({ path: join(SHOTS, file) }); };
    const h1 = () => page.getByRole('heading', { level: 1 });
    const noProblems = () => check(problems.length === 0, problems.join('; '));

    await step('the sign-in page has labelled fields and a Sign in button', async () => {
      await page.goto(`${BASE}/console`);
      await page.getByLabel('Client ID', { exact: true }).waitFor();
      await page.getByLabel('Client secret', { exact: true }).waitFor();
      await page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
      await shot('signin.png');
    });

    await step('a wrong secret shows the error detail', async () => {
      await page.getByLabel('Client ID', { exact: true }).fill(CLIENT_ID);
      await page.getByLabel('Client secret', { exact: true }).fill(`${SECRET}-wrong`);
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      await page.getByRole('alert').filter({ hasText: truth.wrongDetail }).waitFor();
      check(!(await page.getByRole('button', { name: 'Sign out' }).isVisible()), 'signed in with a wrong secret');
      return `"${truth.wrongDetail}"`;
    });

    await step('signing in shows the header with Search, Status, Webhooks and Sign out', async () => {
      await page.getByLabel('Client secret', { exact: true }).fill(SECRET);
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      await page.getByRole('button', { name: 'Sign out', exact: true }).waitFor();
      const navBar = page.getByRole('navigation', { name: 'Main' });
      await navBar.getByRole('link', { name: 'Search', exact: true }).waitFor();
      await navBar.getByRole('link', { name: 'Status', exact: true }).waitFor();
      await navBar.getByRole('link', { name: 'Webhooks', exact: true }).waitFor();
      check(browserToken, 'the token response was not seen');
    });

    await step(`searching "${SEARCH}" lists a link to the user with name and email`, async () => {
      await page.getByLabel('Search', { exact: true }).fill(SEARCH);
      await page.getByRole('button', { name: 'Search', exact: true }).click();
      const results = page.getByRole('list', { name: 'Search results' });
      const link = results.getByRole('link', { name: new RegExp(`${escapeRe(name)}.*${escapeRe(truth.user.email || '')}`) });
      await link.first().waitFor();
      const count = await results.getByRole('link').count();
      await shot('search.png');
      return `${count} result link(s)`;
    });

    await step('opening the user shows its page with profile, accounts, cards, KYC, tree and timeline', async () => {
      const results = page.getByRole('list', { name: 'Search results' });
      await results.getByRole('link', { name: new RegExp(escapeRe(name)) }).first().click();
      await h1().filter({ hasText: name }).waitFor();
      check(page.url().includes(`#/users/${USER}`), `unexpected URL ${page.url()}`);
      for (const title of ['Profile', 'Accounts', 'Cards', 'KYC and verification', 'Relationships', 'Timeline']) {
        await page.getByRole('heading', { level: 2, name: title, exact: true }).waitFor();
      }
      const profile = page.getByRole('region', { name: 'Profile' });
      if (truth.user.email) await profile.getByText(truth.user.email, { exact: true }).first().waitFor();
      if (truth.user.mobile) await profile.getByText(truth.user.mobile, { exact: true }).first().waitFor();
      const cards = page.getByRole('region', { name: 'Cards' });
      for (const c of truth.cards) {
        await cards.getByRole('row', { name: new RegExp(`${escapeRe(c.card_no)}.*${c.state}`, 'i') }).waitFor();
      }
      for (const a of truth.user.accounts || []) {
        await page.getByRole('region', { name: 'Accounts' }).getByText(a.account_id, { exact: true }).waitFor();
      }
      await page.getByRole('region', { name: 'KYC and verification' }).getByText(/^(locked|not locked)$/i).waitFor();
      await shot('user.png');
      return `email ${truth.user.email}, ${truth.cards.length} card(s)`;
    });

    const tree = page.getByRole('region', { name: 'Relationships' });
    await step('the tree shows ancestors above the user and descendants below, as links', async () => {
      const self = tree.getByRole('link', { name, exact: true });
      await self.waitFor();
      check(await self.getAttribute('aria-current') === 'page', 'the user is not marked in the tree');
      const selfBox = await self.boundingBox();
      let previousY = -1;
      for (const a of ancestors.slice().reverse()) { // root first
        const link = tree.getByRole('link', { name: fullName(a), exact: true });
        await link.waitFor();
        check((await link.getAttribute('href')) === `#/users/${a.id}`, `ancestor ${fullName(a)} links elsewhere`);
        const box = await link.boundingBox();
        check(box.y > previousY && box.y < selfBox.y, `ancestor ${fullName(a)} is not above the user in order`);
        previousY = box.y;
      }
      if (children.length > 5) await tree.getByText(`${children.length} children`, { exact: true }).click();
      for (const c of children) {
        const link = tree.getByRole('link', { name: fullName(c), exact: true });
        await link.waitFor();
        check((await link.boundingBox()).y > selfBox.y, `child ${fullName(c)} is not below the user`);
      }
      const links = await tree.getByRole('link').count();
      return `${ancestors.length} ancestor(s), ${children.length} child(ren), ${links} visible node links`;
    });

    if (ancestors.length) {
      await step('following the parent in the tree opens its page, and Back returns', async () => {
        const parent = ancestors[0];
        await tree.getByRole('link', { name: fullName(parent), exact: true }).click();
        await h1().filter({ hasText: fullName(parent) }).waitFor();
        await page.getByRole('region', { name: 'Relationships' }).getByRole('link', { name, exact: true }).waitFor();
        await page.goBack();
        await h1().filter({ hasText: name }).waitFor();
        return fullName(parent);
      });
    }
    if (children.length) {
      await step('following a child in the tree opens its page, and Back returns', async () => {
        const child = children[0];
        if (children.length > 5) await tree.getByText(`${children.length} children`, { exact: true }).click();
        await tree.getByRole('link', { name: fullName(child), exact: true }).click();
        await h1().filter({ hasText: fullName(child) }).waitFor();
        await page.goBack();
        await h1().filter({ hasText: name }).waitFor();
        return fullName(child);
      });
    }

    let chosen = 0;
    const latest = Math.max(...truth.events.map((e) => e.sequence));
    await step('the timeline lists every event, newest first, with type, time and actor', async () => {
      const timeline = page.getByRole('region', { name: 'Timeline' });
      const links = timeline.getByRole('link', { name: /^Version \d+\b/ });
      await links.first().waitFor();
      const texts = await links.allTextContents();
      const seqs = texts.map((t) => Number(/Version (\d+)/.exec(t)[1]));
      check(seqs.length === truth.events.length, `${seqs.length} items for ${truth.events.length} events`);
      check(seqs.every((s, i) => i === 0 || s < seqs[i - 1]), `not newest first: ${seqs.join(',')}`);
      const newest = truth.events.find((e) => e.sequence === latest);
      const first = links.first();
      await first.getByText(newest.event_type, { exact: false }).first().waitFor();
      await first.getByText(/\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/).waitFor();
      await first.getByText(newest.actor.client_id, { exact: false }).first().waitFor();
      chosen = seqs[Math.min(2, seqs.length - 1)];
      return `${seqs.length} items (v${seqs[0]} … v${seqs[seqs.length - 1]})`;
    });

    await step('choosing an older event shows the user as of that version, marked as past', async () => {
      const timeline = page.getByRole('region', { name: 'Timeline' });
      await timeline.getByRole('link', { name: new RegExp(`^Version ${chosen}\\b`) }).click();
      await page.getByText(`Past version ${chosen} of ${latest}`, { exact: true }).waitFor();
      await page.getByText('Past version', { exact: true }).first().waitFor();
      check(page.url().endsWith(`#/users/${USER}/v/${chosen}`), `unexpected URL ${page.url()}`);
      const profile = page.getByRole('region', { name: 'Profile' });
      const mismatch = page.getByRole('alert').filter({ hasText: 'instead of version' });
      check(!(await mismatch.isVisible()), `the server did not answer version ${chosen}: ${await mismatch.textContent().catch(() => '')}`);
      const asOf = await truth.get(`/v1/users/${USER}?version=${chosen}`);
      check(asOf.version === chosen, `GET ?version=${chosen} answers version ${asOf.version} (point-in-time route missing?)`);
      await h1().filter({ hasText: fullName(asOf) }).waitFor();
      await page.getByText(`version ${chosen}`, { exact: true }).first().waitFor();
      const highlighted = await page.getByRole('main').getByText(/^(changed|added|removed)$/).count();
      const selected = page.getByRole('region', { name: 'Timeline' }).getByRole('link', { name: new RegExp(`^Version ${chosen}\\b`) });
      check(await selected.getAttribute('aria-current') === 'true', 'the chosen event is not marked as selected');
      await shot('timeline-past.png');
      await page.getByRole('link', { name: 'Back to current version', exact: true }).click();
      // In main only: the live region (outside it) may still be announcing the past version.
      await page.getByRole('main').getByText(`Past version ${chosen} of`).waitFor({ state: 'detached' });
      await h1().filter({ hasText: name }).waitFor();
      return `version ${chosen} of ${latest}, ${highlighted} field(s) marked changed`;
    });

    await step('the Status page shows user_view and the publisher with their lag', async () => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Status', exact: true }).click();
      await h1().filter({ hasText: 'Service status' }).waitFor();
      const row = page.getByRole('row', { name: /user_view/ });
      await row.waitFor();
      const rowText = (await row.innerText()).replace(/\s+/g, ' ');
      check(/user_view \d+ events?/.test(rowText), `no lag in the user_view row: "${rowText}"`);
      const publisher = page.getByRole('region', { name: 'Publisher' });
      await publisher.getByText('Enabled', { exact: true }).waitFor();
      await publisher.getByText('Lag', { exact: true }).waitFor();
      await shot('status.png');
      return rowText.trim();
    });

    const endpointsTable = page.getByRole('table', { name: 'Webhook endpoints' });
    await step('the Webhooks page lists every endpoint with its URL, event types and state, as text', async () => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Webhooks', exact: true }).click();
      await page.getByRole('heading', { level: 1, name: 'Webhooks', exact: true }).waitFor();
      check(page.url().endsWith('#/webhooks'), `unexpected URL ${page.url()}`);
      if (!truth.endpoints.length) {
        await page.getByText('No webhook endpoints.', { exact: true }).waitFor();
        await shot('webhooks.png');
        return 'no endpoints';
      }
      await endpointsTable.waitFor();
      for (const e of truth.endpoints) {
        await endpointsTable.getByRole('link', { name: e.url, exact: true }).waitFor();
        const row = endpointsTable.getByRole('row').filter({ has: page.getByRole('link', { name: e.url, exact: true }) });
        const cells = await rowCells(endpointsTable, row);
        check(cells['Event types'] === eventTypesText(e.event_types), `${e.url}: event types "${cells['Event types']}"`);
        check(cells.State === endpointStateText(e), `${e.url}: state "${cells.State}", expected "${endpointStateText(e)}"`);
        // Descriptions are free text: one of the test's is markup, which must stay text.
        if (e.description) check(cells.Description === e.description, `${e.url}: description "${cells.Description}"`);
      }
      check(await page.getByRole('img').count() === 0, 'an <img> from API data was rendered');
      noProblems();
      await shot('webhooks.png');
      return `${truth.endpoints.length} endpoint(s)`;
    });

    if (hook) {
      await step('choosing the endpoint by keyboard shows its recent deliveries: delivered, 1 attempt, status 204', async () => {
        const { data: deliveries } = await truth.get(`/v1/webhook-endpoints/${hook.id}/deliveries?limit=20`);
        const sent = deliveries.find((d) => d.status === 'delivered');
        check(sent, `the endpoint has no delivered delivery: ${JSON.stringify(deliveries)}`);
        const link = endpointsTable.getByRole('link', { name: WEBHOOK_URL, exact: true });
        await link.focus();
        await page.keyboard.press('Enter');
        const region = page.getByRole('region', { name: 'Recent deliveries' });
        const table = region.getByRole('table', { name: 'Deliveries' });
        await table.waitFor();
        check(page.url().endsWith(`#/webhooks/${hook.id}`), `unexpected URL ${page.url()}`);
        check(await endpointsTable.getByRole('link', { name: WEBHOOK_URL, exact: true }).getAttribute('aria-current') === 'true',
          'the chosen endpoint is not marked as selected');
        check(await page.evaluate(() => document.activeElement && document.activeElement.textContent) === 'Recent deliveries',
          'focus did not move to the deliveries');
        const headers = await table.getByRole('columnheader').allTextContents();
        const expected = ['Event type', 'Subject', 'Sequence', 'Status', 'Attempts', 'Last status', 'Last attempt'];
        check(headers.join('|') === expected.join('|'), `columns: ${headers.join(', ')}`);
        const rows = table.getByRole('row').filter({ has: page.getByRole('cell') });
        const count = await rows.count();
        check(count >= 1 && count <= 20, `${count} delivery rows (1 to 20 expected)`);
        const shown = [];
        for (let i = 0; i < count; i++) shown.push(await rowCells(table, rows.nth(i)));
        const row = shown.find((c) => c['Event type'] === sent.event_type && c.Subject === sent.subject
          && c.Sequence === String(sent.sequence) && c.Status === 'delivered');
        check(row, `no row for the delivered ${sent.event_type} of ${sent.subject}: ${JSON.stringify(shown)}`);
        check(row.Attempts === '1' && row['Last status'] === '204', `attempts "${row.Attempts}", last status "${row['Last status']}"`);
        check(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/.test(row['Last attempt']), `last attempt "${row['Last attempt']}"`);
        await shot('webhook-deliveries.png');
        await page.goBack();
        await region.waitFor({ state: 'detached' });
        await endpointsTable.getByRole('link', { name: WEBHOOK_URL, exact: true }).waitFor();
        noProblems();
        return `${count} row(s); ${sent.event_type} ${sent.subject} v${sent.sequence}: delivered, 1 attempt, 204`;
      });
    }

    await step('API values are shown as text, never as markup (XSS)', async () => {
      const evil = '<img src=x onerror="window.__rosterXss=1"><script>window.__rosterXss=2</script>';
      const userPath = `/v1/users/${USER}`;
      await page.route((url) => url.pathname === userPath && url.search === '', async (route) => {
        const response = await route.fetch();
        const json = await response.json();
        await route.fulfill({ response, json: { ...json, first_name: evil, last_name: '<b>bold</b>', status_reason: '<i>x</i>' } });
      });
      await page.evaluate((hash) => { location.hash = hash; }, `#/users/${USER}`);
      await h1().filter({ hasText: evil }).waitFor();
      await page.getByText('<i>x</i>', { exact: true }).waitFor();
      check(await page.getByRole('img').count() === 0, 'an <img> from API data was rendered');
      check(await page.evaluate(() => window.__rosterXss === undefined), 'script from API data ran');
      await page.unrouteAll();
    });

    await step('no request left the origin; no cookies, Web Storage or token leaks', async () => {
      const foreign = requests.filter((u) => new URL(u).origin !== ORIGIN);
      check(foreign.length === 0, `requests to other origins: ${foreign.join(', ')}`);
      const cookies = await context.cookies();
      check(cookies.length === 0, `cookies set: ${cookies.map((c) => c.name).join(', ')}`);
      const storage = await page.evaluate(() => ({
        local: localStorage.length, session: sessionStorage.length, cookie: document.cookie, url: location.href,
      }));
      check(storage.local === 0 && storage.session === 0, `Web Storage used: local ${storage.local}, session ${storage.session}`);
      check(!storage.cookie.includes(browserToken), 'the token is in document.cookie');
      check(!storage.url.includes(browserToken) && !requests.some((u) => u.includes(browserToken)), 'the token is in a URL');
      noProblems();
      return `${requests.length} requests, all to ${ORIGIN}`;
    });

    await step('Sign out returns to the sign-in form', async () => {
      await page.getByRole('button', { name: 'Sign out', exact: true }).click();
      await page.getByLabel('Client ID', { exact: true }).waitFor();
      await page.getByRole('navigation', { name: 'Main' }).waitFor({ state: 'detached' });
      noProblems();
    });
  } finally {
    await browser.close();
  }
}

try {
  await main();
  console.log(`PASS: ${stepNo} steps`);
  process.exit(0);
} catch (err) {
  console.error(`FAIL: ${err instanceof Failure ? err.message : err.stack || err}`);
  process.exit(1);
}

/*
 * Roster operator console (CONTRACT §7).
 *
 * Plain JavaScript, no framework, no build step, no external assets. It talks
 * only to this origin: the /v1 API (as the client whose credentials are typed
 * in) and /readyz.
 *
 *  - The access token lives only in the `session` variable below: never in
 *    cookies, Web Storage or the URL. Reloading the page signs out.
 *  - Every value from the API reaches the page as text (text nodes via
 *    Element.append / textContent), never as markup: this file never uses
 *    innerHTML or anything like it.
 *  - The page's CSP forbids inline scripts and styles, so presentation is by
 *    class names (app.css) and the `hidden` attribute only.
 *
 * Routes (location.hash): #/search[?q=…]  #/users/<id>  #/users/<id>/v/<n>  #/status
 *                          #/webhooks  #/webhooks/<endpoint id>
 *
 * Contents: 1 DOM helpers · 2 API client · 3 formatting · 4 shell & routing ·
 * 5 sign-in · 6 search · 7 user page · 8 status page · 9 webhooks page ·
 * 10 start-up
 */
(() => {
  'use strict';

  // ---------------------------------------------------------------- 1. DOM helpers

  const $topbar = document.getElementById('topbar');
  const $app = document.getElementById('app');
  const $live = document.getElementById('live');

  /** h('a', {href, class, onclick}, ...children): children are Nodes or text (never markup). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    add(el, children);
    return el;
  }

  function add(el, children) {
    for (const child of [children].flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return el;
  }

  let idCounter = 0;
  const newId = (prefix) => `${prefix}-${++idCounter}`;
  const srOnly = (text) => h('span', { class: 'sr-only' }, text);

  /** Tells screen readers something (polite). */
  function announce(message) {
    $live.textContent = '';
    window.setTimeout(() => { $live.textContent = message; }, 30);
  }

  let busyCount = 0;
  function setBusy(on) {
    busyCount = Math.max(0, busyCount + (on ? 1 : -1));
    const busy = busyCount > 0;
    $app.setAttribute('aria-busy', busy ? 'true' : 'false');
    document.body.classList.toggle('is-busy', busy);
  }

  // ---------------------------------------------------------------- 2. API client

  /** The signed-in client: {token, clientId, expiresAt}. Memory only. */
  let session = null;
  const householdCache = new Map();

  class ApiError extends Error {
    constructor(message, status, problem) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }
  /** Thrown when the session ended mid-request; views just stop. */
  class SessionEnded extends Error {}

  /** The text to show for a problem+json body: its detail, plus per-field errors. */
  function problemMessage(problem, status) {
    const parts = [];
    if (problem && typeof problem === 'object') {
      const main = problem.detail || problem.title;
      if (main) parts.push(String(main));
      if (Array.isArray(problem.errors)) {
        for (const e of problem.errors) {
          if (e && e.message) parts.push(e.field ? `${e.field}: ${e.message}` : String(e.message));
        }
      }
    }
    if (parts.length) return parts.join(' — ');
    return status ? `The server answered with status ${status}.` : 'The server could not be reached.';
  }

  async function request(path, { method = 'GET', body, auth = true, acceptStatus = [] } = {}) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) {
      if (!session) throw new SessionEnded();
      if (Date.now() >= session.expiresAt) {
        endSession('Your session expired. Sign in again.');
        throw new SessionEnded();
      }
      headers.Authorization = `Bearer ${session.token}`;
      headers['x-appid'] = session.clientId;
    }
    let res;
    try {
      res = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit', cache: 'no-store', redirect: 'error',
      });
    } catch {
      throw new ApiError('The server could not be reached. Check the connection and try again.', 0, null);
    }
    const raw = await res.text();
    let data = null;
    try { data = raw ? JSON.parse(raw) : null; } catch { data = null; }
    if (res.ok || acceptStatus.includes(res.status)) return { status: res.status, data };
    if (auth && res.status === 401 && session) {
      endSession(`Your session has ended: ${problemMessage(data, 401)} Sign in again.`);
      throw new SessionEnded();
    }
    throw new ApiError(problemMessage(data, res.status), res.status, data);
  }

  const api = async (path, options) => (await request(path, options)).data;
  const enc = encodeURIComponent;

  /** Follows cursor pages of `path` (which has no query string yet). */
  async function fetchAllPages(path, maxPages = 20) {
    const items = [];
    let after = null;
    for (let page = 0; page < maxPages; page++) {
      const query = `?limit=100${after ? `&after=${enc(after)}` : ''}`;
      const res = await api(path + query);
      items.push(...(Array.isArray(res && res.data) ? res.data : []));
      if (!res || !res.has_more || !res.next_cursor) return { items, truncated: false };
      after = res.next_cursor;
    }
    return { items, truncated: true };
  }

  async function householdsFor(accounts) {
    const ids = [...new Set((accounts || []).map((a) => a && a.household_id).filter(Boolean))];
    await Promise.all(ids.filter((id) => !householdCache.has(id)).map(async (id) => {
      try { householdCache.set(id, await api(`/v1/households/${enc(id)}`)); } catch (err) {
        if (err instanceof SessionEnded) throw err;
      }
    }));
    return householdCache;
  }

  // ---------------------------------------------------------------- 3. Formatting

  const isBlank = (v) => v === null || v === undefined || v === '';
  const fullName = (u) => [u && u.first_name, u && u.last_name]
    .filter((v) => typeof v === 'string' && v.trim() !== '').join(' ') || '(no name)';

  function none(label = 'not set') {
    return h('span', { class: 'none' }, h('span', { 'aria-hidden': 'true' }, '—'), srOnly(label));
  }
  const text = (v) => (isBlank(v) ? none() : String(v));
  const code = (v) => (isBlank(v) ? none() : h('code', {}, String(v)));

  /** RFC 3339 UTC timestamps as "2026-12-01 22:43:54 UTC" (full value in the tooltip). */
  function time(iso) {
    if (typeof iso !== 'string' || !iso) return none();
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(iso);
    return h('time', { datetime: iso, title: iso }, m ? `${m[1]} ${m[2]} UTC` : iso);
  }

  const TONES = {
    active: 'ok', inactive: 'neutral', blocked: 'warn', closed: 'bad',
    approved: 'ok', pending: 'warn', rejected: 'bad',
    good_standing: 'ok', unactivated: 'accent', terminated: 'bad', ready: 'ok',
    delivered: 'ok', failed: 'bad',
  };
  function badge(label, tone) {
    const t = tone || TONES[String(label).toLowerCase()] || 'neutral';
    return h('span', { class: `badge badge-${t}` }, String(label));
  }
  const stateBadge = (v) => (isBlank(v) ? none() : badge(v));
  const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

  function addressLines(a) {
    if (!a || typeof a !== 'object') return none();
    const cityLine = [a.city, a.region, a.postal_code].filter((v) => !isBlank(v)).join(', ');
    const lines = [a.line1, a.line2, cityLine, a.country].filter((v) => !isBlank(v));
    return lines.length ? h('span', { class: 'lines' }, lines.map((l) => h('span', {}, String(l)))) : none();
  }

  /** JSON with sorted keys, to compare two documents' fields. */
  function stableJson(v) {
    if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
    if (v && typeof v === 'object') {
      return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`).join(',')}}`;
    }
    return JSON.stringify(v === undefined ? null : v);
  }

  // ---------------------------------------------------------------- 4. Shell & routing

  let routeSeq = 0;          // bumps on every navigation; async views drop stale results
  let stopTimers = null;     // cleanup for the status page's auto-refresh
  let lastSearchHash = '#/search';
  const nav = {};

  function renderShell() {
    nav.search = h('a', { href: '#/search', class: 'nav-link' }, 'Search');
    nav.status = h('a', { href: '#/status', class: 'nav-link' }, 'Status');
    nav.webhooks = h('a', { href: '#/webhooks', class: 'nav-link' }, 'Webhooks');
    $topbar.replaceChildren(h('div', { class: 'topbar-inner' },
      h('a', { href: '#/search', class: 'brand' },
        h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'R'), h('span', {}, 'Roster ', h('span', { class: 'brand-sub' }, 'console'))),
      h('nav', { class: 'nav', 'aria-label': 'Main' }, nav.search, nav.status, nav.webhooks),
      h('div', { class: 'session' },
        h('span', { class: 'session-client', title: session.clientId }, 'Client ', h('code', {}, session.clientId)),
        h('button', { type: 'button', class: 'btn btn-quiet', onclick: () => endSession('You signed out.') }, 'Sign out')),
      h('div', { class: 'progress', 'aria-hidden': 'true' })));
    $topbar.hidden = false;
  }

  function markNav(name) {
    for (const [key, link] of Object.entries(nav)) {
      if (key === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  /** Replaces the main content; focuses its h1 so keyboard and screen-reader users land there. */
  function showPage(title, nodes, { focus = true } = {}) {
    document.title = `${title} · Roster console`;
    $app.replaceChildren(...[nodes].flat().filter(Boolean));
    if (focus) {
      const heading = $app.querySelector('h1');
      if (heading) { heading.setAttribute('tabindex', '-1'); heading.focus(); }
      window.scrollTo(0, 0);
    }
  }

  function errorBox(message) {
    return h('div', { class: 'alert alert-error', role: 'alert' }, h('strong', {}, 'Error: '), message);
  }

  function navigate(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }

  function parseRoute() {
    const raw = location.hash.replace(/^#/, '') || '/search';
    const [path, query = ''] = raw.split('?');
    let parts;
    try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch { return { name: 'notfound' }; }
    if (parts[0] === 'search' && parts.length === 1) return { name: 'search', q: new URLSearchParams(query).get('q') || '' };
    if (parts[0] === 'status' && parts.length === 1) return { name: 'status' };
    if (parts[0] === 'webhooks' && parts.length <= 2) return { name: 'webhooks', id: parts[1] || null };
    if (parts[0] === 'users' && parts.length === 2) return { name: 'user', id: parts[1] };
    if (parts[0] === 'users' && parts.length === 4 && parts[2] === 'v' && /^[1-9]\d{0,9}$/.test(parts[3])) {
      return { name: 'user', id: parts[1], version: Number(parts[3]) };
    }
    return { name: 'notfound' };
  }

  function route() {
    if (!session) return; // the sign-in form stays as it is
    if (stopTimers) { stopTimers(); stopTimers = null; }
    const seq = ++routeSeq;
    const isCurrent = () => seq === routeSeq && session !== null;
    const r = parseRoute();
    markNav(r.name === 'user' ? 'search' : r.name);
    if (r.name === 'search') searchPage(r, isCurrent);
    else if (r.name === 'user') userPage(r, isCurrent);
    else if (r.name === 'status') statusPage(isCurrent);
    else if (r.name === 'webhooks') webhooksPage(r, isCurrent);
    else {
      showPage('Not found', [h('h1', {}, 'Page not found'),
        h('p', {}, 'There is nothing at this address. ', h('a', { href: '#/search' }, 'Go to search'), '.')]);
    }
  }

  /** Runs an async view step with the busy indicator; swallows SessionEnded. */
  async function busy(task) {
    setBusy(true);
    try { return await task(); } catch (err) {
      if (err instanceof SessionEnded) return undefined;
      throw err;
    } finally { setBusy(false); }
  }

  // ---------------------------------------------------------------- 5. Sign-in

  function endSession(message) {
    session = null;
    routeSeq++;
    householdCache.clear();
    searchCache = null;
    if (stopTimers) { stopTimers(); stopTimers = null; }
    renderSignIn(message);
  }

  function renderSignIn(message) {
    $topbar.hidden = true;
    $topbar.replaceChildren();
    const idInput = h('input', { id: 'signin-client-id', name: 'client_id', type: 'text', required: true,
      autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', class: 'input mono' });
    const secretInput = h('input', { id: 'signin-client-secret', name: 'client_secret', type: 'password',
      required: true, autocomplete: 'off', class: 'input mono' });
    const button = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
    const errorSlot = h('div', { class: 'form-error' });
    const form = h('form', { class: 'signin-form', novalidate: true },
      h('div', { class: 'field' }, h('label', { for: 'signin-client-id' }, 'Client ID'), idInput),
      h('div', { class: 'field' }, h('label', { for: 'signin-client-secret' }, 'Client secret'), secretInput),
      errorSlot, button);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const clientId = idInput.value.trim();
      const secret = secretInput.value;
      if (!clientId || !secret) {
        errorSlot.replaceChildren(errorBox('Enter both the client ID and the client secret.'));
        (clientId ? secretInput : idInput).focus();
        return;
      }
      button.disabled = true;
      button.textContent = 'Signing in…';
      errorSlot.replaceChildren();
      try {
        const res = await busy(() => api('/v1/oauth/token', { method: 'POST', auth: false,
          body: { grant_type: 'client_credentials', client_id: clientId, client_secret: secret } }));
        if (!res || typeof res.access_token !== 'string') throw new ApiError('The server sent no access token.', 0, null);
        const lifetime = Number(res.expires_in) > 0 ? Number(res.expires_in) : 3600;
        session = { token: res.access_token, clientId, expiresAt: Date.now() + (lifetime - 5) * 1000 };
        secretInput.value = '';
        renderShell();
        announce('Signed in.');
        const r = parseRoute();
        navigate(r.name === 'notfound' || !location.hash ? '#/search' : location.hash);
      } catch (err) {
        errorSlot.replaceChildren(errorBox(err.message));
        secretInput.select();
        secretInput.focus();
      } finally {
        button.disabled = false;
        button.textContent = 'Sign in';
      }
    });

    showPage('Sign in', h('div', { class: 'signin' },
      h('div', { class: 'signin-card' },
        h('div', { class: 'signin-brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'R'),
          h('span', {}, 'Roster ', h('span', { class: 'brand-sub' }, 'console'))),
        h('h1', {}, 'Sign in'),
        h('p', { class: 'muted' }, 'Use your program’s API client credentials. The token is kept in this tab only; reloading the page signs you out.'),
        message ? h('p', { class: 'alert alert-info', role: 'status' }, message) : null,
        form)), { focus: false });
    idInput.focus();
  }

  // ---------------------------------------------------------------- 6. Search

  /** The last search, kept so that coming back to it shows the same pages. */
  let searchCache = null; // {q, criteria, items, cursor, hasMore}

  /** One field for everything: '@' → email; + or mostly digits → mobile; else name. */
  function classify(q) {
    const s = q.trim();
    if (!s) return { by: 'all', body: {} };
    if (s.includes('@')) return { by: 'email', body: { email: s } };
    const digits = (s.match(/\d/g) || []).length;
    const compact = s.replace(/[^\d+]/g, '');
    if (s.startsWith('+') || digits / s.replace(/\s/g, '').length >= 0.6) {
      return { by: 'mobile', body: { mobile: compact.startsWith('+') ? compact : `+${compact}` } };
    }
    return { by: 'name', body: { name: s } };
  }

  /** The mounted search page (form and results), reused while it stays on screen. */
  let searchView = null;

  function searchPage(r, isCurrent) {
    lastSearchHash = location.hash || '#/search';
    if (!searchView || !$app.contains(searchView.root)) searchView = buildSearchView();
    const { root, input, results } = searchView;
    if (!$app.contains(root)) {
      input.value = r.q;
      showPage('Search', root, { focus: false });
      input.focus();
    } else if (input.value.trim() !== r.q) {
      input.value = r.q; // back/forward between searches
    }
    if (!location.hash.includes('?q=')) { results.replaceChildren(); return; } // nothing searched yet
    runSearch(r.q, results, isCurrent);
  }

  function buildSearchView() {
    const input = h('input', { id: 'search-q', name: 'q', type: 'search', class: 'input input-lg',
      autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'search-hint' });
    const form = h('form', { class: 'search-form', role: 'search' },
      h('label', { for: 'search-q', class: 'label-lg' }, 'Search'),
      h('div', { class: 'search-row' }, input, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Search')),
      h('p', { id: 'search-hint', class: 'hint' },
        'Name (any part, any case), email address or mobile number. Leave empty to list everyone.'));
    const results = h('div', { class: 'results' });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      searchCache = null; // a submit always asks the server again
      navigate(`#/search?q=${enc(input.value.trim())}`);
    });
    const root = h('div', { class: 'search-page' }, h('h1', {}, 'Search users'), h('section', { class: 'card' }, form), results);
    return { root, input, results };
  }

  async function runSearch(q, results, isCurrent) {
    if (!searchCache || searchCache.q !== q) {
      const criteria = classify(q);
      searchCache = { q, criteria, items: [], cursor: null, hasMore: false };
      results.replaceChildren(h('p', { class: 'muted' }, 'Searching…'));
      const ok = await loadMore(results, isCurrent);
      if (!ok) return;
    }
    if (isCurrent()) renderResults(results, isCurrent, false);
  }

  async function loadMore(results, isCurrent) {
    const cache = searchCache;
    const body = { ...cache.criteria.body, limit: 25 };
    if (cache.cursor) body.after = cache.cursor;
    try {
      const page = await busy(() => api('/v1/users:search', { method: 'POST', body }));
      if (!page || !isCurrent() || cache !== searchCache) return false;
      cache.items.push(...(Array.isArray(page.data) ? page.data : []));
      cache.hasMore = Boolean(page.has_more && page.next_cursor);
      cache.cursor = page.next_cursor || null;
      return true;
    } catch (err) {
      if (!isCurrent() || cache !== searchCache) return false;
      if (cache.items.length) { // keep the pages already shown
        renderResults(results, isCurrent, false);
        results.append(errorBox(err.message));
      } else {
        results.replaceChildren(errorBox(err.message));
      }
      announce(`Search failed: ${err.message}`);
      return false;
    }
  }

  function renderResults(results, isCurrent, keepFocusAt) {
    const { q, criteria, items, hasMore } = searchCache;
    const byText = { all: 'All users', email: 'Email', mobile: 'Mobile', name: 'Name' }[criteria.by];
    const shown = criteria.by === 'all' ? null : String(Object.values(criteria.body)[0]);
    const summary = h('p', { class: 'results-summary' },
      h('span', { class: 'muted' }, `${byText}${shown ? ' ' : ''}`), shown ? h('strong', {}, `“${shown}”`) : null,
      ` · ${plural(items.length, 'user')}${hasMore ? ' so far' : ''}`);
    const list = h('ul', { class: 'result-list', 'aria-label': 'Search results' }, items.map((u, i) =>
      h('li', { class: 'result' },
        h('a', { href: `#/users/${enc(u.id)}`, class: 'result-link', 'data-index': i },
          h('span', { class: 'result-name' }, fullName(u)), ' ',
          h('span', { class: 'result-email' }, isBlank(u.email) ? 'no email' : String(u.email))),
        h('span', { class: 'result-meta' }, isBlank(u.mobile) ? null : h('span', { class: 'mono' }, String(u.mobile)),
          isBlank(u.status) ? null : badge(u.status)))));
    const more = hasMore ? h('button', { type: 'button', class: 'btn', onclick: async () => {
      more.disabled = true;
      more.textContent = 'Loading…';
      const before = searchCache.items.length;
      if (await loadMore(results, isCurrent)) renderResults(results, isCurrent, before);
    } }, 'More results') : null;
    results.replaceChildren(h('section', { class: 'card', 'aria-labelledby': 'results-h' },
      h('div', { class: 'card-head' }, h('h2', { id: 'results-h' }, 'Results'), summary),
      items.length ? list : h('p', { class: 'empty' }, `No user matches${q ? ` “${q}”` : ''}.`),
      more ? h('div', { class: 'more' }, more) : null));
    if (keepFocusAt !== false) {
      const next = results.querySelector(`a[data-index="${keepFocusAt}"]`) || results.querySelector('button');
      if (next) next.focus();
    }
    announce(items.length ? `${plural(items.length, 'user')} found${hasMore ? ', more available' : ''}.` : 'No user found.');
  }

  // ---------------------------------------------------------------- 7. User page

  /** Fields shown in the profile: [label, the resource's keys it shows, render(user)]. */
  const PROFILE_FIELDS = [
    ['Name', ['first_name', 'last_name'], (u) => fullName(u)],
    ['Email', ['email', 'email_verified'], (u) => (isBlank(u.email) ? none() :
      [h('span', {}, String(u.email)), ' ', badge(u.email_verified ? 'verified' : 'not verified', u.email_verified ? 'ok' : 'neutral')])],
    ['Mobile', ['mobile'], (u) => text(u.mobile)],
    ['Office phone', ['office_phone', 'office_extension'], (u) => (isBlank(u.office_phone) ? none() :
      [String(u.office_phone), isBlank(u.office_extension) ? '' : ` ext. ${u.office_extension}`])],
    ['Status', ['status', 'status_reason'], (u) => [stateBadge(u.status),
      isBlank(u.status_reason) ? null : h('span', { class: 'reason' }, String(u.status_reason))]],
    ['Date of birth', ['date_of_birth'], (u) => text(u.date_of_birth)],
    ['Gender', ['gender'], (u) => text(u.gender)],
    ['Nationality', ['nationality'], (u) => text(u.nationality)],
    ['Locale', ['locale'], (u) => text(u.locale)],
    ['Employee ID', ['employee_id'], (u) => text(u.employee_id)],
    ['External reference', ['external_ref'], (u) => (u.external_ref && typeof u.external_ref === 'object'
      ? [h('span', { class: 'muted' }, `${u.external_ref.type ?? ''} `), h('code', {}, String(u.external_ref.id ?? ''))] : none())],
    ['Address', ['address'], (u) => addressLines(u.address)],
    ['Billing address', ['billing_address'], (u) => addressLines(u.billing_address)],
    ['Communication', ['communication_preferences'], (u) => {
      const p = u.communication_preferences;
      if (!p || typeof p !== 'object') return none();
      const on = ['email', 'sms', 'post'].filter((k) => p[k] === true);
      return on.length ? on.map((k) => badge(k === 'sms' ? 'SMS' : k, 'accent')) : h('span', { class: 'muted' }, 'No channels');
    }],
    ['Login', ['login'], (u) => (u.login && !isBlank(u.login.email) ? String(u.login.email) : h('span', { class: 'muted' }, 'No password set'))],
  ];
  const RECORD_FIELDS = [
    ['User ID', ['id'], (u) => code(u.id)],
    ['Company', ['company_id'], (u) => code(u.company_id)],
    ['Parent', ['parent_user_id'], (u) => (isBlank(u.parent_user_id) ? none('no parent')
      : h('a', { href: `#/users/${enc(u.parent_user_id)}` }, h('code', {}, String(u.parent_user_id))))],
    ['Version', ['version'], (u) => text(u.version)],
    ['Created', ['created_at'], (u) => time(u.created_at)],
    ['Updated', ['updated_at'], (u) => time(u.updated_at)],
  ];
  const NOT_DIFFED = new Set(['version', 'updated_at']);

  /** Top-level keys whose value differs between two versions of the user. */
  function changedKeys(doc, prev) {
    const changed = new Set();
    if (!doc || !prev) return changed;
    for (const key of new Set([...Object.keys(doc), ...Object.keys(prev)])) {
      if (!NOT_DIFFED.has(key) && stableJson(doc[key]) !== stableJson(prev[key])) changed.add(key);
    }
    return changed;
  }

  const changedTag = () => h('span', { class: 'tag-changed' }, 'changed');

  /** A <dl> of fields; with a previous version, changed ones are highlighted and show their old value. */
  function fieldList(fields, doc, prev, changed, extraClass = '') {
    return h('dl', { class: `fields ${extraClass}` }, fields.map(([label, keys, render]) => {
      const isChanged = keys.some((k) => changed.has(k));
      return h('div', { class: `field-row${isChanged ? ' is-changed' : ''}` },
        h('dt', {}, label, isChanged ? [' ', changedTag()] : null),
        h('dd', {}, render(doc),
          isChanged && prev ? h('span', { class: 'was' }, h('span', { class: 'was-label' }, 'before: '),
            h('span', { class: 'was-value' }, render(prev))) : null));
    }));
  }

  function section(title, body, { aside, note, wide, id = newId('sec') } = {}) {
    return h('section', { class: `card${wide ? ' card-wide' : ''}`, 'aria-labelledby': id },
      h('div', { class: 'card-head' }, h('h2', { id }, title), aside || null),
      note ? h('p', { class: 'card-note' }, note) : null,
      body);
  }

  function table(headers, rows, label) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'table', 'aria-label': label },
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
  }

  async function userPage(r, isCurrent) {
    const base = `/v1/users/${enc(r.id)}`;
    const v = r.version;
    const results = await busy(async () => {
      announce(v ? `Loading version ${v}…` : 'Loading user…');
      const settled = await Promise.allSettled([
        api(v ? `${base}?version=${v}` : base),
        v > 1 ? api(`${base}?version=${v - 1}`) : Promise.resolve(null),
        api(`${base}/relationships`),
        fetchAllPages(`${base}/cards`, 5),
        fetchAllPages(`${base}/events`, 50),
      ]);
      if (settled.some((s) => s.status === 'rejected' && s.reason instanceof SessionEnded)) throw new SessionEnded();
      const user = settled[0].status === 'fulfilled' ? settled[0].value : null;
      if (user) await householdsFor(user.accounts).catch((e) => { if (e instanceof SessionEnded) throw e; });
      return settled;
    });
    if (!results || !isCurrent()) return;

    const [userRes, prevRes, relRes, cardsRes, eventsRes] = results;
    if (userRes.status === 'rejected') {
      const err = userRes.reason;
      showPage('User', [h('p', { class: 'back' }, h('a', { href: lastSearchHash }, '← Back to search')),
        h('h1', {}, v ? `Version ${v} could not be shown` : 'User could not be shown'), errorBox(err.message),
        v ? h('p', {}, h('a', { href: `#/users/${enc(r.id)}` }, 'Show the current version')) : null]);
      announce(`Error: ${err.message}`);
      return;
    }
    const user = userRes.value || {};
    const prev = prevRes.status === 'fulfilled' ? prevRes.value : null;
    const events = eventsRes.status === 'fulfilled' ? eventsRes.value.items : [];
    const latest = events.reduce((m, e) => Math.max(m, Number(e.sequence) || 0), 0) || null;
    const changed = v ? changedKeys(user, prev) : new Set();
    const name = fullName(user);

    const head = h('div', { class: 'page-head' },
      h('p', { class: 'back' }, h('a', { href: lastSearchHash }, '← Back to search')),
      h('div', { class: 'title-row' },
        h('h1', {}, name),
        v ? badge('Past version', 'past') : null,
        stateBadge(user.status)),
      h('p', { class: 'subtitle' },
        isBlank(user.email) ? h('span', { class: 'muted' }, 'no email') : h('span', {}, String(user.email)),
        h('span', { class: 'dot', 'aria-hidden': 'true' }, '·'), h('span', {}, `version ${user.version ?? '?'}`),
        h('span', { class: 'dot', 'aria-hidden': 'true' }, '·'), h('span', {}, 'updated ', time(user.updated_at))));

    const main = [
      section('Profile', [fieldList(PROFILE_FIELDS, user, prev, changed),
        h('h3', { class: 'subhead' }, 'Record'), fieldList(RECORD_FIELDS, user, prev, changed, 'fields-compact')]),
      accountsSection(user, prev, changed),
      cardsSection(cardsRes, Boolean(v)),
      kycSection(user, prev, changed),
    ];
    const side = [
      treeSection(user, relRes, Boolean(v)),
      timelineSection(r.id, events, eventsRes, v, latest),
    ];
    const banner = v ? pastBanner(r.id, user, v, latest, events, changed) : null;
    showPage(v ? `${name} (version ${v})` : name, [head, banner,
      h('div', { class: 'user-grid' }, h('div', { class: 'col-main' }, main), h('div', { class: 'col-side' }, side))]);
    announce(v ? `Showing past version ${v}${latest ? ` of ${latest}` : ''} of ${name}.` : `Showing ${name}.`);
  }

  function pastBanner(id, user, v, latest, events, changed) {
    const event = events.find((e) => Number(e.sequence) === v);
    const when = event ? event.occurred_at : user.updated_at;
    const changedLabels = [...PROFILE_FIELDS, ...RECORD_FIELDS]
      .filter(([, keys]) => keys.some((k) => changed.has(k))).map(([label]) => label);
    if (changed.has('accounts')) changedLabels.push('Accounts');
    if (changed.has('kyc')) changedLabels.push('KYC');
    if (changed.has('verification')) changedLabels.push('Verification');
    const summary = v === 1 ? 'This is the user as enrolled.'
      : changedLabels.length ? ['Changed in this version (highlighted below): ', h('strong', {}, changedLabels.join(', ')), '.']
        : 'No field of the user changed in this version.';
    const mismatch = Number(user.version) !== v
      ? errorBox(`The server returned version ${user.version ?? '?'} instead of version ${v}.`) : null;
    return h('aside', { class: 'banner-past', 'aria-labelledby': 'past-title' },
      h('p', { class: 'banner-title', id: 'past-title' },
        h('strong', {}, `Past version ${v}${latest ? ` of ${latest}` : ''}`), ' — as of ', time(when)),
      h('p', {}, event ? ['Right after ', h('code', {}, String(event.event_type)), '. '] : null, summary),
      mismatch,
      event && event.data ? h('details', { class: 'event-data' }, h('summary', {}, 'Event data'),
        h('pre', {}, JSON.stringify(event.data, null, 2))) : null,
      h('div', { class: 'banner-actions' },
        v > 1 ? h('a', { class: 'btn btn-small', href: `#/users/${enc(id)}/v/${v - 1}` }, '← Older version') : null,
        latest && v < latest - 1 ? h('a', { class: 'btn btn-small', href: `#/users/${enc(id)}/v/${v + 1}` }, 'Newer version →') : null,
        h('a', { class: 'btn btn-small btn-primary', href: `#/users/${enc(id)}` }, 'Back to current version')));
  }

  function accountsSection(user, prev, changed) {
    const accounts = Array.isArray(user.accounts) ? user.accounts : [];
    const before = new Map((prev && Array.isArray(prev.accounts) ? prev.accounts : []).map((a) => [a.account_id, a]));
    const householdCell = (hid) => {
      if (isBlank(hid)) return none('no household');
      const hh = householdCache.get(hid);
      return hh ? h('span', { title: String(hid) }, isBlank(hh.name) ? '(unnamed household)' : String(hh.name)) : code(hid);
    };
    const row = (a, mark) => h('tr', { class: mark ? `is-${mark}` : null },
      h('td', {}, code(a.account_id), mark ? [' ', h('span', { class: 'tag-changed' }, mark)] : null),
      h('td', {}, text(a.account_id_type)), h('td', {}, stateBadge(a.status)),
      h('td', {}, text(a.product_code)), h('td', {}, text(a.program_identifier)), h('td', {}, householdCell(a.household_id)));
    const rows = accounts.map((a) => {
      if (!changed.has('accounts') || !prev) return row(a, null);
      const old = before.get(a.account_id);
      return row(a, !old ? 'added' : stableJson(old) !== stableJson(a) ? 'changed' : null);
    });
    if (changed.has('accounts') && prev) {
      const ids = new Set(accounts.map((a) => a.account_id));
      for (const [aid, a] of before) if (!ids.has(aid)) rows.push(row(a, 'removed'));
    }
    return section('Accounts', rows.length
      ? table(['Account', 'Type', 'Status', 'Product', 'Program', 'Household'], rows, 'Accounts')
      : h('p', { class: 'empty' }, 'No accounts.'),
    { aside: h('span', { class: 'count' }, plural(accounts.length, 'account')) });
  }

  function cardsSection(cardsRes, past) {
    if (cardsRes.status === 'rejected') return section('Cards', errorBox(cardsRes.reason.message));
    const cards = cardsRes.value.items;
    const rows = cards.map((c) => h('tr', {},
      h('td', {}, h('span', { class: 'mono card-no' }, isBlank(c.card_no) ? `****${c.last4 ?? ''}` : String(c.card_no))),
      h('td', {}, stateBadge(c.state)), h('td', {}, text(c.card_type)), h('td', {}, text(c.issuer)),
      h('td', {}, time(c.created_at)),
      h('td', {}, c.terminated_at ? [time(c.terminated_at), c.termination && !isBlank(c.termination.reason_code)
        ? h('span', { class: 'reason' }, String(c.termination.reason_code)) : null] : none('not terminated'))));
    return section('Cards', rows.length
      ? table(['Card', 'State', 'Type', 'Issuer', 'Ordered', 'Terminated'], rows, 'Cards')
      : h('p', { class: 'empty' }, 'No cards.'), {
      aside: h('span', { class: 'count' }, plural(cards.length, 'card')),
      note: past ? 'Cards are shown as they are now, not as of this version.' : null,
    });
  }

  function kycSection(user, prev, changed) {
    const fields = [
      ['KYC ID', ['kyc'], (u) => code(u.kyc && u.kyc.kyc_id)],
      ['KYC status', ['kyc'], (u) => stateBadge(u.kyc && u.kyc.status)],
      ['Security questions', ['verification'], (u) => {
        const codes = u.verification && Array.isArray(u.verification.question_codes) ? u.verification.question_codes : [];
        return codes.length ? codes.map((c) => h('code', { class: 'chip' }, String(c))) : none('none set');
      }],
      ['Verification', ['verification'], (u) => (u.verification && u.verification.locked
        ? badge('Locked', 'bad') : badge('Not locked', 'ok'))],
    ];
    return section('KYC and verification', fieldList(fields, user, prev, changed));
  }

  // --- Relationship tree: ancestors above (root first), the user, descendants nested below.

  const COLLAPSE_OVER = 5;

  function treeSection(user, relRes, past) {
    if (relRes.status === 'rejected') return section('Relationships', errorBox(relRes.reason.message));
    const rel = relRes.value || {};
    const ancestors = (Array.isArray(rel.ancestors) ? rel.ancestors : []).slice().sort((a, b) => a.depth - b.depth);
    const descendants = Array.isArray(rel.descendants) ? rel.descendants : [];
    const byParent = new Map();
    for (const d of descendants) {
      if (!byParent.has(d.parent_user_id)) byParent.set(d.parent_user_id, []);
      byParent.get(d.parent_user_id).push(d);
    }
    const placed = new Set([user.id]);
    const nodeLink = (p, extra) => h('a', { href: `#/users/${enc(p.id)}`, class: `tree-link${extra ? ` ${extra}` : ''}`,
      'aria-current': extra === 'is-self' ? 'page' : null }, fullName(p));

    const childrenOf = (parentId) => {
      const kids = (byParent.get(parentId) || []).filter((k) => !placed.has(k.id));
      kids.forEach((k) => placed.add(k.id));
      if (!kids.length) return null;
      const list = h('ul', { class: 'tree-children' }, kids.map((k) => descendantNode(k)));
      if (kids.length <= COLLAPSE_OVER) return list;
      return h('details', { class: 'tree-more' }, h('summary', {}, `${plural(kids.length, 'child', 'children')}`), list);
    };
    const descendantNode = (d) => h('li', {}, h('div', { class: 'tree-label' }, nodeLink(d)), childrenOf(d.id));

    let node = h('li', { class: 'tree-self' },
      h('div', { class: 'tree-label' }, nodeLink({ ...user, id: user.id }, 'is-self'), h('span', { class: 'tree-tag' }, 'this user')),
      childrenOf(user.id));
    const orphans = descendants.filter((d) => !placed.has(d.id));
    if (orphans.length) {
      node.append(h('ul', { class: 'tree-children' }, orphans.map((d) => h('li', {},
        h('div', { class: 'tree-label' }, nodeLink(d), h('span', { class: 'tree-tag' }, `depth ${d.depth}`))))));
    }
    ancestors.forEach((a, i) => {
      const tag = i === 0 ? 'parent' : i === ancestors.length - 1 ? 'root' : null;
      node = h('li', {}, h('div', { class: 'tree-label' }, nodeLink(a), tag ? h('span', { class: 'tree-tag' }, tag) : null),
        h('ul', { class: 'tree-children' }, node));
    });
    const counts = `${plural(ancestors.length, 'ancestor')} · ${plural(descendants.length, 'descendant')}`;
    return section('Relationships', [
      h('ul', { class: 'tree', 'aria-label': 'Relationship tree' }, node),
      rel.descendants_truncated ? h('p', { class: 'card-note' }, 'The tree is too large: not every descendant is shown.') : null,
    ], {
      aside: h('span', { class: 'count' }, counts),
      note: past ? 'Relationships are shown as they are now.' : null,
    });
  }

  // --- Timeline: one item per audit-trail entry, newest first; each opens that version.

  function timelineSection(id, events, eventsRes, v, latest) {
    if (eventsRes.status === 'rejected') return section('Timeline', errorBox(eventsRes.reason.message));
    const ordered = events.slice().sort((a, b) => Number(b.sequence) - Number(a.sequence));
    const items = ordered.map((e) => {
      const seq = Number(e.sequence);
      const isLatest = seq === latest;
      const selected = v ? seq === v : isLatest;
      const actor = e.actor && e.actor.client_id;
      return h('li', { class: `tl-item${selected ? ' is-selected' : ''}` },
        h('a', { class: 'tl-link', href: isLatest ? `#/users/${enc(id)}` : `#/users/${enc(id)}/v/${seq}`,
          'aria-current': selected ? 'true' : null },
        srOnly(`Version ${seq} `),
        h('span', { class: 'tl-seq', 'aria-hidden': 'true' }, `v${seq}`),
        h('span', { class: 'tl-body' },
          h('span', { class: 'tl-type' }, String(e.event_type ?? 'unknown event'),
            isLatest ? [' ', h('span', { class: 'tag tag-current' }, 'current')] : null,
            selected && v ? [' ', h('span', { class: 'tag tag-viewing' }, 'viewing')] : null,
            e.erased ? [' ', h('span', { class: 'tag' }, 'erased')] : null), ' ',
          h('span', { class: 'tl-meta' }, time(e.occurred_at),
            session && actor === session.clientId ? ' · this client' : null), ' ',
          h('span', { class: 'tl-meta' }, 'by ', isBlank(actor) ? 'unknown' : h('code', {}, String(actor))))));
    });
    return section('Timeline', items.length
      ? h('ol', { class: 'timeline', 'aria-label': 'Events, newest first' }, items)
      : h('p', { class: 'empty' }, 'No events.'), {
      aside: h('span', { class: 'count' }, plural(events.length, 'event')),
      note: eventsRes.value.truncated ? 'Only the oldest events are listed: the trail is very long.' : 'Newest first. Choose an event to see the user as it was right after it.',
    });
  }

  // ---------------------------------------------------------------- 8. Status page

  const lagText = (n) => (typeof n === 'number' ? plural(n, 'event') : n === null || n === undefined ? null : String(n));

  function statusPage(isCurrent) {
    const body = h('div', { class: 'status-body' }, h('p', { class: 'muted' }, 'Checking…'));
    const refresh = h('button', { type: 'button', class: 'btn', onclick: () => load(true) }, 'Refresh');
    showPage('Status', h('div', { class: 'status-page' }, h('div', { class: 'title-row' }, h('h1', {}, 'Service status'), refresh),
      h('p', { class: 'muted' }, 'From /readyz. Refreshes every 10 seconds.'), body));

    async function load(manual) {
      try {
        const res = await busy(() => request('/readyz', { auth: false, acceptStatus: [503] }));
        if (!res || !isCurrent()) return;
        renderStatus(body, res.data || {}, res.status);
        if (manual) announce('Status refreshed.');
      } catch (err) {
        if (isCurrent()) body.replaceChildren(errorBox(err.message));
      }
    }
    load(false);
    const timer = window.setInterval(() => load(false), 10000);
    stopTimers = () => window.clearInterval(timer);
  }

  function renderStatus(body, s, httpStatus) {
    const projections = s.projections && typeof s.projections === 'object' ? Object.entries(s.projections) : [];
    const hasExtra = projections.some(([, p]) => p && typeof p === 'object' && Object.keys(p).some((k) => k !== 'lag_events'));
    const rows = projections.map(([name, p]) => {
      const lag = p && typeof p === 'object' ? p.lag_events : undefined;
      const extra = p && typeof p === 'object' ? Object.entries(p).filter(([k]) => k !== 'lag_events') : [];
      return h('tr', {},
        h('th', { scope: 'row' }, h('code', {}, name)),
        h('td', { class: 'num' }, lagText(lag) ?? none('unknown')),
        h('td', {}, lag === 0 ? badge('up to date', 'ok') : typeof lag === 'number' ? badge('behind', 'warn') : badge('unknown')),
        hasExtra ? h('td', { class: 'muted' }, extra.map(([k, val]) => `${k}: ${typeof val === 'object' ? JSON.stringify(val) : val}`).join(', ')) : null);
    });
    const pub = s.publisher && typeof s.publisher === 'object' ? s.publisher : {};
    body.replaceChildren(
      h('p', { class: 'status-line' }, 'Overall: ', stateBadge(s.status ?? (httpStatus === 200 ? 'ready' : 'not ready')),
        h('span', { class: 'muted' }, ` HTTP ${httpStatus} · checked at `), time(new Date().toISOString().replace(/\.\d+Z$/, 'Z'))),
      section('Projections', rows.length
        ? table(['Projection', 'Lag', 'State', ...(hasExtra ? ['Details'] : [])], rows, 'Projections')
        : h('p', { class: 'empty' }, 'No projections reported.')),
      section('Publisher', h('dl', { class: 'fields' },
        h('div', { class: 'field-row' }, h('dt', {}, 'Enabled'),
          h('dd', {}, pub.enabled === true ? badge('enabled', 'ok') : pub.enabled === false ? badge('disabled') : none('unknown'))),
        h('div', { class: 'field-row' }, h('dt', {}, 'Lag'),
          h('dd', {}, lagText(pub.lag_events) ?? none(pub.enabled === false ? 'not publishing' : 'unknown'))))));
  }

  // ---------------------------------------------------------------- 9. Webhooks page
  //
  // The company's endpoints (CONTRACT §9) in a table; choosing one (#/webhooks/<id>)
  // shows its most recent deliveries below. Endpoints are managed through the API:
  // this page only reads.

  const RECENT_DELIVERIES = 20;

  /** The mounted webhooks page, kept while only the chosen endpoint changes (no flash, focus stays sensible). */
  let webhooksView = null; // {root, body, reload}

  function webhooksPage(r, isCurrent) {
    const fresh = !webhooksView || !$app.contains(webhooksView.root);
    if (fresh) webhooksView = buildWebhooksView();
    const view = webhooksView;
    view.reload = () => load(true);
    if (fresh) showPage('Webhooks', view.root, { focus: !r.id });

    async function load(manual) {
      const results = await busy(async () => {
        const settled = await Promise.allSettled([
          fetchAllPages('/v1/webhook-endpoints', 10),
          r.id ? api(`/v1/webhook-endpoints/${enc(r.id)}/deliveries?limit=${RECENT_DELIVERIES}`) : Promise.resolve(null),
        ]);
        if (settled.some((s) => s.status === 'rejected' && s.reason instanceof SessionEnded)) throw new SessionEnded();
        return settled;
      });
      if (!results || !isCurrent()) return;
      const [endpointsRes, deliveriesRes] = results;
      renderWebhooks(view.body, r.id, endpointsRes, deliveriesRes);
      document.title = `${r.id ? 'Webhook deliveries' : 'Webhooks'} · Roster console`;
      // Someone who chose an endpoint lands on its deliveries; one who left them, back on the title
      // (the link they used is gone); a refresh leaves focus on its button.
      const target = manual ? null : view.body.querySelector('#deliveries-h') || (fresh ? null : view.root.querySelector('h1'));
      if (target) { target.setAttribute('tabindex', '-1'); target.focus(); }
      if (manual) announce('Webhooks refreshed.');
      else if (endpointsRes.status === 'fulfilled') announce(webhooksSummary(endpointsRes.value.items, r.id, deliveriesRes));
    }
    load(false);
  }

  function buildWebhooksView() {
    const body = h('div', { class: 'webhooks-body' }, h('p', { class: 'muted' }, 'Loading…'));
    const refresh = h('button', { type: 'button', class: 'btn', onclick: () => webhooksView && webhooksView.reload() }, 'Refresh');
    const root = h('div', { class: 'webhooks-page' },
      h('div', { class: 'title-row' }, h('h1', {}, 'Webhooks'), refresh),
      h('p', { class: 'muted' }, 'The endpoints this company’s events are sent to, and what was sent. ',
        'Endpoints are managed through the API (', h('code', {}, '/v1/webhook-endpoints'), ').'),
      body);
    return { root, body, reload: () => {} };
  }

  function webhooksSummary(endpoints, id, deliveriesRes) {
    const head = endpoints.length ? `${plural(endpoints.length, 'webhook endpoint')}.` : 'No webhook endpoints.';
    if (!id || !deliveriesRes || deliveriesRes.status !== 'fulfilled') return head;
    const n = Array.isArray(deliveriesRes.value && deliveriesRes.value.data) ? deliveriesRes.value.data.length : 0;
    return `${head} Showing ${plural(n, 'recent delivery', 'recent deliveries')}.`;
  }

  function renderWebhooks(body, id, endpointsRes, deliveriesRes) {
    const endpoints = endpointsRes.status === 'fulfilled' ? endpointsRes.value.items : [];
    const chosen = id ? endpoints.find((e) => e && e.id === id) || null : null;
    body.replaceChildren(endpointsSection(endpointsRes, id));
    if (id) body.append(deliveriesSection(id, chosen, deliveriesRes));
  }

  /** "enabled", or "disabled (manual)" / "disabled (gone)": why it gets nothing. */
  function endpointState(e) {
    if (!e.disabled) return badge('enabled', 'ok');
    const reason = isBlank(e.disabled_reason) ? null : String(e.disabled_reason);
    return badge(reason ? `disabled (${reason})` : 'disabled', reason === 'gone' ? 'bad' : 'warn');
  }

  /** null means every type (CONTRACT §9); an empty list would mean none. */
  function eventTypes(types) {
    if (types === null || types === undefined) return h('span', { class: 'muted' }, 'all event types');
    if (!Array.isArray(types) || !types.length) return h('span', { class: 'muted' }, 'no event types');
    return h('span', { class: 'chips' }, types.map((t) => h('code', { class: 'chip' }, String(t))));
  }

  function endpointsSection(endpointsRes, id) {
    if (endpointsRes.status === 'rejected') return section('Endpoints', errorBox(endpointsRes.reason.message));
    const { items, truncated } = endpointsRes.value;
    const rows = items.filter((e) => e && typeof e === 'object').map((e) => {
      const selected = e.id === id;
      return h('tr', { class: selected ? 'is-selected' : null },
        h('td', { class: 'wrap' }, h('a', { href: `#/webhooks/${enc(e.id)}`, class: 'endpoint-link mono',
          'aria-current': selected ? 'true' : null }, isBlank(e.url) ? '(no URL)' : String(e.url))),
        h('td', { class: 'wrap' }, text(e.description)),
        h('td', { class: 'wrap' }, eventTypes(e.event_types)),
        h('td', {}, endpointState(e)),
        h('td', {}, time(e.created_at)));
    });
    return section('Endpoints', rows.length
      ? table(['URL', 'Description', 'Event types', 'State', 'Created'], rows, 'Webhook endpoints')
      : h('p', { class: 'empty' }, 'No webhook endpoints.'), {
      aside: h('span', { class: 'count' }, plural(rows.length, 'endpoint')),
      note: truncated ? 'Only the first endpoints are listed: there are very many.'
        : rows.length ? 'Choose an endpoint’s URL to see its recent deliveries.' : null,
    });
  }

  /** The answer's status code; else why there was none (a timeout, a refused connection…); else nothing yet. */
  function lastStatus(d) {
    if (typeof d.last_status_code === 'number') return h('code', {}, String(d.last_status_code));
    if (!isBlank(d.last_error)) return h('span', { class: 'delivery-error' }, String(d.last_error));
    return none('no answer yet');
  }

  /** users/<id> links to the user's page; other subjects (households) are shown as they are. */
  function subjectCell(subject) {
    if (isBlank(subject)) return none();
    const m = /^users\/([^/]+)$/.exec(String(subject));
    return m ? h('a', { href: `#/users/${enc(m[1])}` }, h('code', {}, String(subject))) : code(subject);
  }

  function deliveriesSection(id, endpoint, deliveriesRes) {
    const heading = 'Recent deliveries';
    const target = h('p', { class: 'delivery-target' }, 'To ',
      endpoint ? h('code', {}, isBlank(endpoint.url) ? '(no URL)' : String(endpoint.url)) : h('code', {}, String(id)),
      endpoint && endpoint.disabled ? [' ', endpointState(endpoint)] : null);
    if (deliveriesRes.status === 'rejected') {
      return section(heading, [target, errorBox(deliveriesRes.reason.message)], { id: 'deliveries-h' });
    }
    const page = deliveriesRes.value || {};
    const deliveries = (Array.isArray(page.data) ? page.data : []).filter((d) => d && typeof d === 'object');
    const rows = deliveries.map((d) => h('tr', {},
      h('td', {}, code(d.event_type)),
      h('td', {}, subjectCell(d.subject)),
      h('td', { class: 'num' }, text(d.sequence)),
      h('td', {}, stateBadge(d.status),
        d.status === 'pending' && d.next_attempt_at ? h('span', { class: 'next-attempt' }, 'next ', time(d.next_attempt_at)) : null),
      h('td', { class: 'num' }, text(d.attempts)),
      h('td', { class: 'wrap' }, lastStatus(d)),
      h('td', {}, time(d.last_attempt_at))));
    return section(heading, [target, rows.length
      ? table(['Event type', 'Subject', 'Sequence', 'Status', 'Attempts', 'Last status', 'Last attempt'], rows, 'Deliveries')
      : h('p', { class: 'empty' }, 'Nothing has been sent to this endpoint yet.')], {
      id: 'deliveries-h',
      aside: h('span', { class: 'count' }, plural(rows.length, 'delivery', 'deliveries')),
      note: page.has_more ? `The ${RECENT_DELIVERIES} most recent, newest first; older ones are not shown.` : 'Newest first.',
    });
  }

  // ---------------------------------------------------------------- 10. Start-up

  window.addEventListener('hashchange', route);
  renderSignIn();
})();

// rrpc web's page: the overview at /, a page per service at /services/NAME.
// Everything shown comes from the JSON API of the same server and is put in
// the page as text (textContent, text nodes): dead letters are hostile.
// No inline script, no eval, nothing from the network (see the CSP).
'use strict';

const REFRESH_MS = 5000;
const BOUNDS_S = [...Array(11).keys()].map((k) => Math.pow(2, 6 + 2 * k) / 1e6);
let flags = { read_only: true, csrf: '' };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function status(text) {
  document.getElementById('status').textContent = text;
}

async function api(path, options) {
  const r = await fetch('/api' + path, Object.assign({ credentials: 'same-origin' }, options));
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: 'not JSON (HTTP ' + r.status + ')' }; }
  if (!r.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + r.status);
  return body;
}

function post(path, body) {
  return api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-RRPC-CSRF': flags.csrf },
    body: JSON.stringify(body || {}),
  });
}

const fmt = {
  n: (v) => (typeof v === 'number' ? v.toLocaleString('en') : '?'),
  rate: (v) => (typeof v === 'number' ? v.toFixed(v < 10 ? 2 : 0) : '?'),
  ms: (v) => (typeof v === 'number' ? (v < 1 ? v.toFixed(3) : v.toFixed(1)) + ' ms' : '?'),
  age: (v) => (v === null || v === undefined ? 'unknown' : v < 1 ? v.toFixed(2) + ' s' : v.toFixed(1) + ' s'),
  pct: (a, b) => (b > 0 ? ((100 * a) / b).toFixed(1) + ' %' : '0 %'),
  time: (t) => (typeof t === 'number' ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) : '?'),
};

function verdict(v) {
  return el('span', { class: 'verdict v-' + String(v).replace(/[^a-z]+/g, '-') }, v);
}

// Per-minute differences of a cumulative series [[minute, value], ...].
function perMinute(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const dt = (points[i][0] - points[i - 1][0]) / 60;
    const dv = points[i][1] - points[i - 1][1];
    if (dt > 0 && dv >= 0) out.push([points[i][0], dv / dt]);
  }
  return out;
}

// A small line chart of [[x, y], ...] as SVG, built with DOM calls only.
function spark(points, title, cls) {
  const NS = 'http://www.w3.org/2000/svg';
  const w = 220, h = 44;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'spark' + (cls ? ' ' + cls : ''));
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const box = el('div', { class: 'chart' });
  if (points.length > 0) {
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 60), y1 = Math.max(...ys, 1e-9);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', points
      .map((p) => `${(((p[0] - x0) / (x1 - x0)) * (w - 4) + 2).toFixed(1)},${(h - 2 - (p[1] / y1) * (h - 4)).toFixed(1)}`)
      .join(' '));
    svg.append(line);
    box.append(el('div', { class: 'title' }, `${title} (max ${fmt.rate(y1)})`), svg);
  } else {
    box.append(el('div', { class: 'title' }, title), el('div', { class: 'muted' }, 'no history yet'));
  }
  return box;
}

// The upper bound (ms) of the bucket holding quantile q of bucket deltas.
function quantileMs(deltas, q) {
  const total = deltas[deltas.length - 1] || 0;
  if (total <= 0) return null;
  for (let k = 0; k < deltas.length; k++) if (deltas[k] >= q * total) return BOUNDS_S[k] * 1000;
  return null;
}

// ---- the overview -----------------------------------------------------------

function overviewRow(s) {
  const calls = (s.history || []).map((p) => [p[0], p[1]]);
  return el('tr', { 'data-service': s.service },
    el('td', {}, el('a', { href: '/services/' + encodeURIComponent(s.service) }, s.service)),
    el('td', {}, verdict(s.verdict)),
    el('td', { class: 'num' }, fmt.n(s.workers)),
    el('td', { class: 'num' }, fmt.n(s.queue)),
    el('td', { class: 'num' }, fmt.age(s.oldest_age_s)),
    el('td', { class: 'num' }, fmt.rate(s.calls_per_s)),
    el('td', { class: 'num' }, fmt.pct(s.errors_per_s, s.calls_per_s)),
    el('td', { class: 'num' }, fmt.ms(s.p50_ms)),
    el('td', { class: 'num' }, fmt.ms(s.p99_ms)),
    el('td', { class: 'num' }, fmt.n(s.dead)),
    el('td', {}, spark(perMinute(calls), 'calls/min')));
}

async function renderOverview(main) {
  const data = await api('/overview');
  flags = data;
  const head = ['Service', 'Health', 'Workers', 'Queue', 'Oldest', 'Calls/s', 'Errors',
    'p50*', 'p99*', 'Dead', 'Last hour'];
  const table = el('table', { id: 'services' },
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...data.services.map(overviewRow)));
  main.replaceChildren(
    el('h1', {}, 'Services'),
    data.services.length ? table : el('p', { class: 'muted' }, 'No service has registered yet.'),
    el('p', { class: 'muted' }, '* p50/p99: the slowest method, over all time. ' +
      'Calls/s and errors: over the last ' + 10 + ' s sample.'));
}

// ---- a service --------------------------------------------------------------

function methodCharts(history) {
  const names = new Set();
  history.forEach((e) => Object.keys((e.sample && e.sample.methods) || {}).forEach((n) => names.add(n)));
  const boxes = [];
  for (const name of [...names].sort()) {
    const pts = history.map((e) => [e.minute, e.sample.methods[name]]).filter((p) => p[1]);
    const calls = perMinute(pts.map((p) => [p[0], p[1].calls]));
    const p99 = [];
    for (let i = 1; i < pts.length; i++) {
      const d = pts[i][1].buckets.map((v, k) => v - (pts[i - 1][1].buckets[k] || 0));
      const q = quantileMs(d, 0.99);
      if (q !== null) p99.push([pts[i][0], q]);
    }
    boxes.push(spark(calls, name + ': calls/min'), spark(p99, name + ': p99 ms (bucket bound)', 'err'));
  }
  return boxes;
}

// Requeues the one dead letter REC (by its ref: the server removes exactly
// that record, whatever else changed since the page was drawn).
async function requeueOne(name, rec, refresh) {
  if (!window.confirm('Requeue this dead letter of ' + name + ' (' + String(rec.reason) + ')?')) return;
  try {
    const r = await post('/services/' + encodeURIComponent(name) + '/requeue-one', { ref: rec.ref });
    status('requeue one: ' + JSON.stringify(r));
  } catch (e) {
    status('requeue one failed: ' + e.message);
  }
  refresh();
}

function deadTable(name, dead, refresh) {
  if (!dead.length) return el('p', { class: 'muted', id: 'no-dead' }, 'No dead letters.');
  const inspect = el('pre', { id: 'inspect', hidden: '' });
  const rows = dead.map((d, i) => {
    const rec = typeof d === 'object' && d !== null ? d : { message: String(d) };
    const message = rec.message !== undefined ? rec.message
      : rec.message_prefix !== undefined ? rec.message_prefix + ' ...' : '(binary: message_base64)';
    return el('tr', { class: 'dead' },
      el('td', {}, fmt.time(rec.time)),
      el('td', { class: 'reason' }, rec.reason === undefined ? '?' : String(rec.reason)),
      el('td', { class: 'msg' }, String(message)),
      el('td', {}, el('button', {
        class: 'inspect', 'data-index': i,
        onclick: () => { inspect.hidden = false; inspect.textContent = JSON.stringify(d, null, 2); },
      }, 'Inspect'),
      // Only a record that kept its whole message can be requeued.
      flags.read_only || typeof rec.ref !== 'string' || typeof rec.message !== 'string' ? null
        : el('button', { class: 'requeue-one', 'data-index': i, onclick: () => requeueOne(name, rec, refresh) }, 'Requeue')));
  });
  return el('div', {},
    el('table', { id: 'dead' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Time (UTC)'), el('th', {}, 'Reason'),
        el('th', {}, 'Message'), el('th', {}, ''))),
      el('tbody', {}, ...rows)),
    inspect);
}

function deadActions(name, refresh) {
  if (flags.read_only) return null;
  const act = async (what, question) => {
    if (!window.confirm(question)) return;
    try {
      const r = await post('/services/' + encodeURIComponent(name) + '/' + what);
      status(what + ': ' + JSON.stringify(r));
    } catch (e) {
      status(what + ' failed: ' + e.message);
    }
    refresh();
  };
  return el('div', { class: 'actions' },
    el('button', { id: 'requeue', onclick: () => act('requeue', 'Requeue every dead letter of ' + name + '?') }, 'Requeue all'),
    el('button', { id: 'purge', class: 'danger', onclick: () => act('purge', 'Delete every dead letter of ' + name + '? This cannot be undone.') }, 'Purge'));
}

function consoleForm(name) {
  if (flags.read_only) return el('p', { class: 'muted' }, 'Read-only: the call console is off.');
  const method = el('input', { id: 'c-method', value: '', placeholder: 'method' });
  const params = el('textarea', { id: 'c-params', rows: 3, placeholder: '[1, 2] or {"a": 1}' });
  const out = el('pre', { id: 'c-out' });
  const send = el('button', { id: 'c-send', type: 'submit' }, 'Send');
  const form = el('form', { class: 'console' },
    el('label', { for: 'c-method' }, 'Method'), method,
    el('label', { for: 'c-params' }, 'Params (JSON)'), params,
    el('span', {}), send);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let p = null;
    try { p = params.value.trim() ? JSON.parse(params.value) : null; } catch (e) {
      out.textContent = 'params are not JSON: ' + e.message; return;
    }
    out.textContent = '...';
    try {
      const r = await post('/call', { service: name, method: method.value, params: p });
      out.textContent = JSON.stringify(r, null, 2);
    } catch (e) { out.textContent = 'failed: ' + e.message; }
  });
  return el('div', {}, form, out);
}

async function renderService(main, name) {
  const sections = {
    head: el('div'), charts: el('div', { class: 'charts' }), workers: el('div'),
    methods: el('div'), dead: el('div'),
  };
  let consoleBuilt = false;
  const consoleBox = el('div');
  main.replaceChildren(
    el('h1', {}, 'Service ', el('span', { id: 'service-name' }, name)),
    sections.head,
    el('h2', {}, 'Last hour'), sections.charts,
    el('h2', {}, 'Workers'), sections.workers,
    el('h2', {}, 'Methods'), sections.methods,
    el('h2', {}, 'Dead letters'), sections.dead,
    el('h2', {}, 'Call console'), consoleBox);
  const refresh = async () => {
    const d = await api('/services/' + encodeURIComponent(name));
    flags = d;
    const m = d.metrics;
    sections.head.replaceChildren(el('p', {}, verdict(m.verdict),
      ` ${m.workers} workers, queue ${m.queue}, oldest ${fmt.age(m.oldest_age_s)}, ` +
      `dead ${m.dead}, expired ${m.expired}, shed ${m.shed}, redelivered ${m.redelivered}`));
    const hist = d.history || [];
    sections.charts.replaceChildren(
      spark(perMinute(hist.map((e) => [e.minute, e.sample.calls])), 'calls/min'),
      spark(perMinute(hist.map((e) => [e.minute, e.sample.errors])), 'errors/min', 'err'),
      spark(hist.map((e) => [e.minute, e.sample.queue]), 'queue depth'),
      ...methodCharts(hist));
    sections.workers.replaceChildren(el('table', { id: 'workers' },
      el('thead', {}, el('tr', {}, ...['Worker', 'Host', 'PID', 'Version', 'Threads', 'Heartbeat left']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, ...d.info.workers.map((w) => el('tr', {},
        el('td', {}, w.id), el('td', {}, w.host === undefined ? '?' : w.host),
        el('td', { class: 'num' }, w.pid === undefined ? '?' : w.pid),
        el('td', {}, w.version === undefined ? '?' : w.version),
        el('td', { class: 'num' }, w.threads === undefined ? '?' : w.threads),
        el('td', { class: 'num' }, fmt.age(w.expires_in)))))));
    const st = (d.stats && d.stats.methods) || {};
    sections.methods.replaceChildren(el('table', { id: 'methods' },
      el('thead', {}, el('tr', {}, ...['Method', 'Description', 'Calls', 'Errors', 'p50', 'p99']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, ...d.info.methods.map((mm) => {
        const s = st[mm.name] || {};
        return el('tr', {}, el('td', {}, mm.name), el('td', {}, mm.description || ''),
          el('td', { class: 'num' }, fmt.n(s.calls || 0)), el('td', { class: 'num' }, fmt.n(s.errors || 0)),
          el('td', { class: 'num' }, fmt.ms(s.p50_ms)), el('td', { class: 'num' }, fmt.ms(s.p99_ms)));
      }))));
    sections.dead.replaceChildren(deadActions(name, refresh) || el('span'), deadTable(name, d.dead, refresh));
    if (!consoleBuilt) { consoleBox.replaceChildren(consoleForm(name)); consoleBuilt = true; }
  };
  await refresh();
  return refresh;
}

// ---- start ------------------------------------------------------------------

async function start() {
  const main = document.getElementById('main');
  const path = location.pathname;
  let refresh;
  try {
    if (path.startsWith('/services/')) {
      const name = decodeURIComponent(path.slice('/services/'.length));
      document.title = name + ' - rrpc';
      refresh = await renderService(main, name);
    } else {
      refresh = () => renderOverview(main);
      await refresh();
    }
    document.getElementById('mode').textContent = flags.read_only ? 'read-only' : '';
    status('updated ' + new Date().toLocaleTimeString());
    document.body.dataset.ready = '1';
  } catch (e) {
    status('error: ' + e.message);
    return;
  }
  setInterval(async () => {
    try { await refresh(); status('updated ' + new Date().toLocaleTimeString()); } catch (e) { status('error: ' + e.message); }
  }, REFRESH_MS);
}

start();

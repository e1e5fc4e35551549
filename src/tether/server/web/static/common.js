// Shared helpers of the Tether web client: API calls (cookie + CSRF), DOM building
// (text only: never innerHTML with user or agent data), server-side rich rendering,
// relative times, toasts, ids.

export const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || '';
export const ROLE = document.body.dataset.role || 'viewer';
export const CAN_WRITE = ROLE === 'owner' || ROLE === 'member';

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

// fetch() with the session cookie, the CSRF header on writes, JSON in and out, and the
// server's error shape turned into an ApiError (status 0: the network failed). A 401 sends the
// browser to the login page, unless the caller is a background call (``redirect: false``) that
// handles the ApiError itself: a page the user is not acting on must not jump away by itself.
export async function api(path, { method = 'GET', json, form, signal, redirect = true } = {}) {
  const headers = { Accept: 'application/json' };
  let body;
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = CSRF;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, credentials: 'same-origin', signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'The server cannot be reached.');
  }
  if (resp.status === 401 && redirect && !path.startsWith('/login')) {
    const next = location.pathname + location.search;
    location.assign('/login?next=' + encodeURIComponent(next));
    throw new ApiError(401, 'authentication_error', 'Log in again.');
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(resp.status, err.type || 'api_error', err.message || `Request failed (${resp.status}).`);
  }
  return data;
}

// el('div', {class: 'x', onclick: fn, dataset: {a: 1}}, 'text', child) — children are
// text or nodes; strings always become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'text') node.textContent = value;
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Rich rendering happens on the server (markdown-it-py + Pygments + nh3). Requests made
// in the same tick travel together; the element shows plain text until the answer is in.
const renderQueue = [];
let renderTimer = null;
const renderCache = new Map();

export function renderInto(node, item) {
  const key = JSON.stringify(item);
  const cached = renderCache.get(key);
  if (cached !== undefined) {
    setHtml(node, cached);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    renderQueue.push({ node, item, key, resolve });
    if (!renderTimer) renderTimer = setTimeout(flushRender, 0);
  });
}

function setHtml(node, html) {
  if (!html) return;
  // sanitised by the server (nh3 allow-list); this is the one place HTML is inserted
  node.innerHTML = html;
  node.classList.add('rendered');
  watchScrollers(node);
}

// Keyboard access to what scrolls (WCAG 2.1.1, axe's scrollable-region-focusable): a code block,
// diff, table or output wider or taller than its box gets a tab stop and a name, so it can be
// focused and scrolled with the arrow keys; one that fits gets neither (no useless tab stops).
// A ResizeObserver re-checks when the box changes (a phone turned, a <details> opened).
const SCROLLERS = 'pre, .d-scroll, table, .thinking-text';
const scrollWatch = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => entries.forEach((entry) => syncScrollable(entry.target)))
  : null;

export function watchScrollers(root) {
  const nodes = root.matches(SCROLLERS) ? [root] : [];
  nodes.push(...root.querySelectorAll(SCROLLERS));
  for (const node of nodes) {
    if (scrollWatch) scrollWatch.observe(node);
    syncScrollable(node);
  }
}

export function syncScrollable(node) {
  const scrolls = node.scrollWidth > node.clientWidth + 1 || node.scrollHeight > node.clientHeight + 1;
  if (scrolls === (node.dataset.scrolls === 'true')) return;
  node.dataset.scrolls = String(scrolls);
  const isTable = node.tagName === 'TABLE'; // keeps its table role; a named table may take focus
  if (scrolls) {
    node.tabIndex = 0;
    if (!isTable) node.setAttribute('role', 'group');
    node.setAttribute('aria-label', scrollLabel(node));
  } else {
    node.removeAttribute('tabindex');
    node.removeAttribute('role');
    node.removeAttribute('aria-label');
  }
}

function scrollLabel(node) {
  if (node.closest('.diff')) return 'Diff (scrollable)';
  if (node.tagName === 'TABLE') return 'Table (scrollable)';
  if (node.classList.contains('result-text')) return 'Tool output (scrollable)';
  if (node.classList.contains('thinking-text')) return 'Thinking (scrollable)';
  return 'Code (scrollable)';
}

// A batch stays well under the server's 1 MiB body limit; an item that is too large on
// its own travels alone (the server answers "" for it and the text stays plain).
const RENDER_BATCH_ITEMS = 200;
const RENDER_BATCH_CHARS = 512 * 1024;

function takeBatch() {
  let size = 0;
  let count = 0;
  while (count < renderQueue.length && count < RENDER_BATCH_ITEMS) {
    size += renderQueue[count].key.length;
    if (count > 0 && size > RENDER_BATCH_CHARS) break;
    count += 1;
  }
  return renderQueue.splice(0, count);
}

async function flushRender(attempt = 0) {
  renderTimer = null;
  const batch = takeBatch();
  if (!batch.length) return;
  try {
    const data = await api('/web/render', { method: 'POST', json: { items: batch.map((b) => b.item) } });
    batch.forEach((b, i) => {
      const html = data.html[i] || '';
      if (renderCache.size > 500) renderCache.clear();
      renderCache.set(b.key, html);
      setHtml(b.node, html);
      b.resolve();
    });
  } catch (err) {
    if (err instanceof ApiError && err.retryable && attempt < 6) {
      renderQueue.unshift(...batch);
      setTimeout(() => flushRender(attempt + 1), 500 * 2 ** attempt);
      return;
    }
    batch.forEach((b) => b.resolve()); // stays plain text
  }
  if (renderQueue.length) renderTimer = setTimeout(flushRender, 0);
}

export function newUuid() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function timeAgo(iso) {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 45) return 'just now';
  if (s < 90) return '1 min ago';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 5400) return '1 h ago';
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 172800) return 'yesterday';
  return new Date(t).toLocaleDateString();
}

export function timeEl(iso) {
  const node = el('time', { datetime: iso || '', title: iso ? new Date(iso).toLocaleString() : '' }, timeAgo(iso));
  node.classList.add('ago');
  return node;
}

export function refreshTimes(root = document) {
  for (const node of root.querySelectorAll('time.ago')) node.textContent = timeAgo(node.getAttribute('datetime'));
}

export const STATUS_LABEL = {
  running: 'Running',
  idle: 'Idle',
  requires_action: 'Requires action',
  archived: 'Archived',
};

export function badge(status) {
  return el('span', { class: `badge s-${status}` }, STATUS_LABEL[status] || status);
}

export function toast(message, kind = 'info', ms = 4000) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const node = el('div', { class: `toast ${kind}` }, message);
  box.append(node);
  setTimeout(() => node.remove(), ms);
}

export function basename(path) {
  if (!path) return '';
  const parts = String(path).replace(/\/+$/, '').split('/');
  return parts[parts.length - 1] || path;
}

// Run fn now and every `ms` while the page is visible; at once again when it comes back.
export function whileVisible(fn, ms) {
  let timer = null;
  const tick = () => {
    clearTimeout(timer);
    if (document.visibilityState === 'visible') fn();
    timer = setTimeout(tick, ms);
  };
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') tick();
  });
  window.addEventListener('online', tick);
  tick();
  return tick;
}

export function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

export function openDialog(dialog, focus) {
  if (typeof dialog.showModal === 'function') dialog.showModal();
  else dialog.setAttribute('open', '');
  if (focus) focus.focus();
}

export function closeDialog(dialog) {
  if (typeof dialog.close === 'function') dialog.close();
  else dialog.removeAttribute('open');
}

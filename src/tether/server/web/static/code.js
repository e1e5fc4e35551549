// /code: machines (environments) and sessions, filtered, kept live by a periodic refetch
// plus one subscribe socket per active session (session_update frames move badges at once).
import {
  api, el, badge, timeEl, refreshTimes, basename, whileVisible, wsUrl, newUuid, toast,
  openDialog, closeDialog, CAN_WRITE,
} from './common.js';
import { ReconnectPolicy } from './reconnect.js';

const envList = document.getElementById('environments');
const sessionList = document.getElementById('sessions');
const fStatus = document.getElementById('f-status');
const fEnv = document.getElementById('f-env');
const fWorker = document.getElementById('f-worker');
const live = document.getElementById('live');
const dialog = document.getElementById('new-session');
const nsForm = document.getElementById('ns-form');
const nsPrompt = document.getElementById('ns-prompt');
const nsName = document.getElementById('ns-name');
const nsEnv = document.getElementById('ns-env');
const nsError = document.getElementById('ns-error');
const nsSubmit = document.getElementById('ns-submit');
// "New session on the server": the server picks an online runner (target: "runner"), which clones
// the optional repository into a fresh work directory (docs/protocol.md §3.8, §11.9).
const nsServer = document.getElementById('ns-server');
const nsRepoRow = document.getElementById('ns-repo-row');
const nsRepo = document.getElementById('ns-repo');
const nsBranch = document.getElementById('ns-branch');
const ON_SERVER = { server: true };

const params = new URLSearchParams(location.search);
const bridge = params.get('bridge');
fStatus.value = params.get('status') || 'active';
if (!fStatus.value) fStatus.value = 'active';

let envs = [];
let sessions = [];
let loaded = false;
// false while the server cannot be reached: what the lists show is only the last known state
let reachable = true;
let newSessionEnv = null;
let bridgeHandled = false;
const sockets = new Map(); // session id → {ws, timer, closed}
const MAX_SOCKETS = 30;

function envById(id) {
  return envs.find((e) => e.id === id);
}

function syncUrl() {
  const q = new URLSearchParams();
  if (fStatus.value !== 'active') q.set('status', fStatus.value);
  if (fEnv.value) q.set('environment', fEnv.value);
  if (fWorker.value) q.set('worker_type', fWorker.value);
  const s = q.toString();
  history.replaceState(null, '', location.pathname + (s ? `?${s}` : ''));
}

function fillSelect(select, values, allLabel) {
  const current = select.dataset.wanted !== undefined ? select.dataset.wanted : select.value;
  select.replaceChildren(el('option', { value: '' }, allLabel), ...values.map(([v, label]) => el('option', { value: v }, label)));
  if (values.some(([v]) => v === current)) {
    select.value = current;
    delete select.dataset.wanted;
  } else {
    select.value = '';
  }
}

function renderEnvironments() {
  fillSelect(fEnv, envs.map((e) => [e.id, `${e.machine_name || 'machine'} · ${basename(e.directory)}`]), 'All machines');
  const types = [...new Set(envs.map((e) => e.worker_type).filter(Boolean))].sort();
  fillSelect(fWorker, types.map((t) => [t, t]), 'All workers');
  const runners = envs.filter((e) => e.kind === 'cloud');
  const runnerOnline = runners.some((e) => e.online);
  nsServer.hidden = !runners.length;
  nsServer.disabled = !runnerOnline || !CAN_WRITE;
  nsServer.title = !CAN_WRITE ? 'Viewers cannot start sessions'
    : runnerOnline ? 'Start a session on one of the server\'s runners' : 'No runner is online';
  if (!envs.length) {
    envList.replaceChildren(el('li', { class: 'empty' },
      el('strong', {}, 'No machines yet. '), 'Start ', el('code', {}, 'tether up'), ' in a project directory.'));
  } else {
    envList.replaceChildren(...envs.map(envCard));
  }
}

// A machine is "online" only by a fresh answer of the server: while the server is away, its
// machines are unknown (the bridge of `tether up` may have stopped with it).
function machineState(env) {
  if (!reachable) return ['unknown', 'status unknown', 'The server cannot be reached'];
  return env.online ? ['on', 'online', 'Start a session on this machine'] : ['off', 'offline', 'The machine is offline'];
}

function envCard(env) {
  const [dot, label, hint] = machineState(env);
  const online = dot === 'on';
  const selected = fEnv.value === env.id || bridge === env.id;
  const button = el('button', {
    type: 'button', class: 'primary small-btn', disabled: !online || !CAN_WRITE, title: hint,
    onclick: () => openNewSession(env),
  }, 'New session');
  if (!CAN_WRITE) button.title = 'Viewers cannot start sessions';
  return el('li', { class: `env${selected ? ' selected' : ''}`, dataset: { env: env.id, state: dot } },
    el('div', { class: 'env-top' },
      el('span', { class: `dot ${dot}`, role: 'img', 'aria-label': label }),
      el('span', { class: 'env-name' }, env.machine_name || 'machine'),
      el('span', { class: 'muted small env-state' }, label)),
    el('div', { class: 'env-dir', title: env.directory || '' }, shortPath(env.directory)),
    el('div', { class: 'env-meta muted small' },
      env.branch ? el('span', { class: 'branch' }, '⎇ ', env.branch) : null,
      el('span', {}, `${env.active_sessions}/${env.max_sessions} sessions`),
      el('span', { class: 'tag' }, env.worker_type || 'claude_code')),
    el('div', { class: 'env-actions' },
      el('button', { type: 'button', class: 'small-btn', onclick: () => { delete fEnv.dataset.wanted; fEnv.value = env.id; onFilter(); } }, 'Show sessions'),
      button));
}

function shortPath(path) {
  if (!path) return '—';
  const parts = path.split('/').filter(Boolean);
  return parts.length > 3 ? `…/${parts.slice(-3).join('/')}` : path;
}

function visibleSessions() {
  const status = fStatus.value;
  return sessions.filter((s) => {
    if (status === 'active' && s.session_status === 'archived') return false;
    if (status !== 'active' && status !== 'all' && s.session_status !== status) return false;
    if (fEnv.value && s.environment_id !== fEnv.value) return false;
    if (fWorker.value) {
      const env = envById(s.environment_id);
      if (!env || env.worker_type !== fWorker.value) return false;
    }
    return true;
  });
}

function workerText(s) {
  const env = envById(s.environment_id);
  if (s.session_status === 'archived') return ['off', 'archived'];
  if (!reachable) return ['unknown', 'status unknown'];
  if (s.environment && s.environment.online === false) return ['off', 'machine offline'];
  if (s.worker && s.worker.connected) return ['on', 'worker connected'];
  return ['idle', env ? 'no worker' : 'no machine'];
}

function sessionRow(s) {
  const env = envById(s.environment_id);
  const [dot, wtext] = workerText(s);
  return el('li', { class: `session s-${s.session_status}`, dataset: { session: s.id, status: s.session_status } },
    el('a', { href: `/code/${s.id}`, class: 'session-link' },
      el('span', { class: 'session-title' }, s.title || 'Untitled session'),
      el('span', { class: 'session-meta muted small' },
        el('span', {}, env ? `${env.machine_name} · ${basename(env.directory)}` : 'no machine'),
        el('span', { class: 'worker' }, el('span', { class: `dot ${dot}`, 'aria-hidden': 'true' }), wtext),
        el('span', {}, 'active ', timeEl(s.updated_at)))),
    badge(s.session_status));
}

function renderSessions() {
  const rows = visibleSessions();
  if (!rows.length) {
    const msg = sessions.length ? 'No sessions match these filters.' : 'No sessions yet. Start one on an online machine.';
    sessionList.replaceChildren(el('li', { class: 'empty' }, msg));
  } else {
    sessionList.replaceChildren(...rows.map(sessionRow));
  }
  syncSockets(rows);
}

function render() {
  renderEnvironments();
  renderSessions();
}

async function refresh() {
  try {
    const [e, s] = await Promise.all([api('/v1/environments'), api('/v1/sessions?limit=200')]);
    envs = e.data;
    sessions = s.data;
    loaded = true;
    reachable = true;
    live.textContent = 'Live';
    live.className = 'live-dot on';
    render();
    maybeOpenBridge();
  } catch (err) {
    live.className = 'live-dot off';
    live.textContent = 'Offline — retrying';
    if (!loaded) {
      sessionList.replaceChildren(el('li', { class: 'empty' }, `Could not load sessions: ${err.message}`));
    } else if (reachable) {
      reachable = false;
      render();
    }
  }
}

function maybeOpenBridge() {
  if (!bridge || bridgeHandled) return;
  bridgeHandled = true;
  const env = envById(bridge);
  if (!env) {
    toast('That machine is not registered (any more).', 'error');
    return;
  }
  delete fEnv.dataset.wanted;
  fEnv.value = env.id;
  onFilter();
  const card = envList.querySelector(`[data-env="${CSS.escape(env.id)}"]`);
  if (card) card.scrollIntoView({ block: 'nearest' });
  if (env.online && CAN_WRITE) openNewSession(env);
}

// ---- live status through subscribe sockets ---------------------------------------------
function syncSockets(rows) {
  const wanted = new Set(rows.filter((s) => s.session_status !== 'archived').slice(0, MAX_SOCKETS).map((s) => s.id));
  for (const [id, sock] of sockets) {
    if (!wanted.has(id)) {
      sock.closed = true;
      clearTimeout(sock.timer);
      sock.ws?.close(1000);
      sockets.delete(id);
    }
  }
  for (const id of wanted) if (!sockets.has(id)) openSocket(id);
}

function openSocket(id) {
  const sock = sockets.get(id) || { closed: false, policy: new ReconnectPolicy() };
  sockets.set(id, sock);
  const ws = new WebSocket(wsUrl(`/v1/sessions/ws/${id}/subscribe`));
  sock.ws = ws;
  ws.onmessage = (ev) => {
    sock.policy.heard();
    let f;
    try { f = JSON.parse(ev.data); } catch { return; }
    const s = sessions.find((x) => x.id === id);
    if (!s) return;
    if (f.type === 'session_update') {
      s.session_status = f.status;
      if (f.title) s.title = f.title;
      if (f.worker) s.worker = { ...s.worker, ...f.worker };
      s.updated_at = new Date().toISOString();
      renderSessions();
    } else if (typeof f.sequence_num === 'number' && !f.ephemeral && f.type !== 'delivery_update') {
      s.updated_at = new Date().toISOString();
      const row = sessionList.querySelector(`[data-session="${CSS.escape(id)}"] time.ago`);
      if (row) { row.setAttribute('datetime', s.updated_at); row.textContent = 'just now'; }
    }
  };
  ws.onopen = () => sock.policy.opened();
  ws.onclose = (ev) => {
    if (sock.closed) return;
    const next = sock.policy.closed(ev.code); // 4003 and a lasting 4001 stop it (reconnect.js)
    if (next.retry) sock.timer = setTimeout(() => { if (!sock.closed) openSocket(id); }, next.delayMs);
  };
}

// ---- new session -----------------------------------------------------------------------
function openNewSession(env) {
  newSessionEnv = env;
  nsRepoRow.hidden = env !== ON_SERVER;
  nsEnv.textContent = env === ON_SERVER
    ? 'On the server: a runner starts it in a fresh work directory (with a clone of the repository, if you give one).'
    : `On ${env.machine_name} · ${env.directory}${env.branch ? ` (${env.branch})` : ''}`;
  nsError.hidden = true;
  openDialog(dialog, nsPrompt);
}

nsForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = nsPrompt.value.trim();
  if (!text || !newSessionEnv) return;
  nsSubmit.disabled = true;
  nsError.hidden = true;
  const body = {
    events: [{ type: 'user', uuid: newUuid(), session_id: '', parent_tool_use_id: null,
      message: { role: 'user', content: text } }],
  };
  if (newSessionEnv === ON_SERVER) {
    body.target = 'runner';
    const repo = nsRepo.value.trim();
    if (repo) {
      const source = { type: 'git_repository', url: repo };
      if (nsBranch.value.trim()) source.revision = nsBranch.value.trim();
      body.session_context = { sources: [source] };
    }
  } else {
    body.environment_id = newSessionEnv.id;
  }
  if (nsName.value.trim()) body.title = nsName.value.trim();
  try {
    const s = await api('/v1/sessions', { method: 'POST', json: body });
    location.assign(`/code/${s.id}`);
  } catch (err) {
    nsError.textContent = err.message;
    nsError.hidden = false;
    nsSubmit.disabled = false;
  }
});
nsPrompt.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.metaKey || ev.ctrlKey)) nsForm.requestSubmit();
});
document.getElementById('ns-cancel').addEventListener('click', () => closeDialog(dialog));
nsServer.addEventListener('click', () => openNewSession(ON_SERVER));

function onFilter() {
  syncUrl();
  renderEnvironments();
  renderSessions();
}
for (const select of [fStatus, fEnv, fWorker]) {
  select.addEventListener('change', () => { delete select.dataset.wanted; onFilter(); });
}
if (params.get('environment') || bridge) fEnv.dataset.wanted = params.get('environment') || bridge;
if (params.get('worker_type')) fWorker.dataset.wanted = params.get('worker_type');

whileVisible(refresh, 4000);
setInterval(() => refreshTimes(sessionList), 30000);

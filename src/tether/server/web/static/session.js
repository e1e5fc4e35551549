// /code/<session_id>: the live transcript and the controls of one session.
//
// History comes from GET /v1/sessions/{id}/events (newest page first, older pages on
// demand); live frames from the subscribe socket opened with ?from_sequence_num=<last seen>,
// so a reconnect — a dropped socket, a server restart (1012), a tab coming back — resumes
// exactly where the page was: stored events are applied once, in sequence order, and
// deduplicated by sequence number and uuid. When to reconnect, and when to stop (4003, 4001),
// is reconnect.js's ReconnectPolicy.
import {
  api, el, renderInto, newUuid, refreshTimes, toast, whileVisible, wsUrl,
  openDialog, closeDialog, ApiError, CAN_WRITE, STATUS_LABEL, watchScrollers, syncScrollable,
} from './common.js';
import { ReconnectPolicy } from './reconnect.js';

const SID = document.body.dataset.session;
const $ = (id) => document.getElementById(id);
const transcript = $('transcript');
const outbox = $('outbox');
const streamBox = $('streaming');
const asks = $('asks');
const titleEl = $('title');
const badgeEl = $('badge');
const health = $('health');
const composer = $('composer');
const promptBox = $('prompt');
const sendBtn = $('send');
const composerHint = composer.querySelector('.composer-hint');
const stopBtn = $('stop');
const fileInput = $('file');
const attachList = $('attachments');
const jumpBtn = $('jump');
const terminalBar = $('terminal');
const takeOverBtn = $('take-over');
const returnBtn = $('return-terminal');
const earlierBtn = $('load-earlier');
// made here rather than in the page's HTML: a "Retry now" next to the health line while a retry
// waits; the note that says why the page stopped (4003); the note of a watch-only mirror session
// (the countdown is not in the live health line: a screen reader would read it every second)
const retryIn = el('span', { class: 'retry-in muted small' });
const retryBtn = el('button', { type: 'button', id: 'retry-now', class: 'link small' }, 'Retry now');
const retryBox = el('p', { id: 'retry', class: 'retry', hidden: true }, retryIn, ' ', retryBtn);
health.after(retryBox);
const accessBox = el('p', { id: 'access', class: 'ended', role: 'alert', hidden: true });
const mirrorBox = el('p', { id: 'watch-only', class: 'ended', role: 'note', hidden: true },
  el('strong', {}, 'Watch only (mirror).'),
  ' This session is mirrored from a terminal: its prompts, permission answers and Stop are given there.');
composer.before(accessBox, mirrorBox);
const MIRROR_TAG = 'ccr-mirror';

const PAGE = Math.min(1000, Math.max(1, Number(new URLSearchParams(location.search).get('page_size')) || 300));
const MAX_RESULT_CHARS = 20000;
const PROMPT_RANK = { held: 0, sending: 0, retrying: 0, failed: 0, queued: 1, delivered: 2, processed: 3 };
const PROMPT_LABEL = {
  held: 'Queued · sends once connected', sending: 'Sending…', retrying: 'Retrying…', failed: 'Not sent',
  queued: 'Queued', delivered: 'Delivered', processed: 'Processed',
};
const DELIVERY = { pending: 'queued', received: 'delivered', processing: 'delivered', processed: 'processed' };
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

const state = {
  lastSeq: 0,
  firstId: null,
  hasMore: false,
  session: null,
  env: null,
  ws: null,
  wsState: 'connecting', // connecting | open | reconnecting | gone | unauthorized
  policy: new ReconnectPolicy(),
  retryAt: 0, // when the waiting reconnect fires (0: none waits)
  retryWhy: '', // why it waits: dropped | restart | not_found
  retryTicker: null,
  lastFrameAt: 0,
  reconnectTimer: null,
  items: new Set(), // uuids of stored events already shown
  prompts: new Map(), // uuid → {node, status, msg, seq}
  tools: new Map(), // tool_use_id → {card, stateEl, resultEl, name, done}
  perms: new Map(), // request_id → {card, seq, req}
  resolved: new Map(), // request_id → outcome
  decisions: new Map(), // tool_use_id → outcome of its permission
  answers: new Map(), // request_id → control_response frame not yet confirmed
  streams: new Map(), // message id → {nodes: [{index, node}], done: n}
  interrupts: new Set(),
  attachments: [], // {id, file_uuid, file_name, status, node}
  model: '',
  terminal: null, // the last system/tether_terminal event: who drives a `tether claude` session
  terminalSeq: 0,
  terminalAsk: null, // request_id of a Take over / Return to terminal not settled yet
};

// ---- scrolling -----------------------------------------------------------------------------
function nearBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 160;
}
function scrollToBottom() {
  window.scrollTo({ top: document.documentElement.scrollHeight });
  jumpBtn.hidden = true;
}
function sticky(fn) {
  const stick = nearBottom();
  const out = fn();
  if (stick) requestAnimationFrame(scrollToBottom);
  else jumpBtn.hidden = false;
  return out;
}
jumpBtn.addEventListener('click', scrollToBottom);
window.addEventListener('scroll', () => { if (nearBottom()) jumpBtn.hidden = true; }, { passive: true });

// ---- rendering helpers -----------------------------------------------------------------------
function textOf(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b && b.type === 'text' ? b.text : '')).filter(Boolean).join('\n');
}

function markdown(text) {
  const node = el('div', { class: 'md' }, el('p', { class: 'plain-md' }, text));
  renderInto(node, { type: 'markdown', text });
  return node;
}

function metaLine(text, cls = '', uuid) {
  return el('div', { class: `meta ${cls}`, dataset: uuid ? { uuid } : {} }, text);
}

function oneLine(name, input) {
  const i = input || {};
  const pick = i.command || i.file_path || i.path || i.pattern || i.url || i.query || i.description || i.prompt;
  if (typeof pick === 'string') return pick.split('\n')[0].slice(0, 200);
  if (Array.isArray(i.todos)) return `${i.todos.length} items`;
  const first = Object.values(i).find((v) => typeof v === 'string');
  return first ? first.split('\n')[0].slice(0, 200) : '';
}

function json(value) {
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

// The input of a tool call: diffs for edits, the command for Bash, JSON otherwise.
function inputView(name, input, eager, shown = null) {
  const i = input || {};
  const view = el('div', { class: 'tool-input' });
  const add = (item, fallback) => {
    const node = el('div', { class: 'rich' }, el('pre', { class: 'plain' }, fallback));
    view.append(node);
    return () => renderInto(node, item);
  };
  const jobs = [];
  if ((name === 'Edit' || name === 'MultiEdit') && typeof i.file_path === 'string') {
    const edits = Array.isArray(i.edits) ? i.edits : [i];
    for (const edit of edits) {
      if (!edit || typeof edit !== 'object') continue;
      const old = typeof edit.old_string === 'string' ? edit.old_string : '';
      const neu = typeof edit.new_string === 'string' ? edit.new_string : '';
      jobs.push(add({ type: 'diff', old, new: neu, path: i.file_path }, `${i.file_path}\n- ${old}\n+ ${neu}`));
    }
    if (i.replace_all) view.append(el('p', { class: 'muted small' }, 'Replaces every occurrence.'));
  } else if (name === 'Write' && typeof i.file_path === 'string') {
    const content = typeof i.content === 'string' ? i.content : '';
    jobs.push(add({ type: 'diff', old: '', new: content, path: i.file_path }, `${i.file_path}\n${content}`));
  } else if (name === 'Bash' && typeof i.command === 'string') {
    // the permission card already shows the stock CLI's description above: not twice
    if (i.description && i.description !== shown) view.append(el('p', { class: 'muted small' }, i.description));
    jobs.push(add({ type: 'code', text: i.command, language: 'bash' }, i.command));
  } else {
    jobs.push(add({ type: 'code', text: json(i), language: 'json' }, json(i)));
  }
  const run = () => { jobs.splice(0).forEach((job) => job()); };
  if (eager) run();
  return { view, run };
}

// ---- transcript items ------------------------------------------------------------------------
const mainCtx = { add: (node) => transcript.append(node), live: true, earlier: false };

function promptNode(msg, status) {
  const content = msg.message ? msg.message.content : '';
  const text = textOf(content);
  const bubble = el('div', { class: 'bubble' });
  if (text) bubble.append(el('div', { class: 'prompt-text' }, text));
  if (Array.isArray(content)) {
    for (const b of content) {
      const src = b && b.type === 'image' && b.source;
      if (src && src.type === 'base64' && IMAGE_TYPES.has(src.media_type) && /^[A-Za-z0-9+/=]+$/.test(src.data || '')) {
        bubble.append(el('img', { class: 'thumb', alt: 'Attached image', src: `data:${src.media_type};base64,${src.data}` }));
      }
    }
  }
  const files = Array.isArray(msg.file_attachments) ? msg.file_attachments : [];
  if (files.length) {
    bubble.append(el('ul', { class: 'files' }, files.map((f) => {
      const id = String(f.file_uuid || '');
      const name = String(f.file_name || 'file');
      return el('li', {}, /^[A-Za-z0-9_-]+$/.test(id)
        ? el('a', { href: `/api/oauth/files/${encodeURIComponent(id)}/content`, download: name }, '📎 ', name)
        : name);
    })));
  }
  const stateEl = el('span', { class: 'delivery', dataset: { state: status } }, PROMPT_LABEL[status] || status);
  return el('div', { class: 'msg user', dataset: { uuid: msg.uuid || '' } }, bubble, el('div', { class: 'msg-foot' }, stateEl));
}

function setPromptStatus(uuid, status, detail) {
  const p = state.prompts.get(uuid);
  if (!p) return;
  const forward = PROMPT_RANK[status] > PROMPT_RANK[p.status];
  const sideways = PROMPT_RANK[status] === 0 && PROMPT_RANK[p.status] === 0;
  if (!forward && !sideways) return;
  p.status = status;
  const stateEl = p.node.querySelector('.delivery');
  stateEl.dataset.state = status;
  stateEl.textContent = detail ? `${PROMPT_LABEL[status]} — ${detail}` : PROMPT_LABEL[status];
  const retry = p.node.querySelector('.retry');
  if (status === 'failed' && !retry) {
    stateEl.after(el('button', { type: 'button', class: 'link retry', onclick: () => dispatchPrompt(uuid) }, 'Retry'));
  } else if (status !== 'failed' && retry) {
    retry.remove();
  }
}

function renderUser(f, ctx) {
  const content = f.message ? f.message.content : undefined;
  const blocks = Array.isArray(content) ? content : [];
  const results = blocks.filter((b) => b && b.type === 'tool_result');
  if (results.length) {
    for (const r of results) attachResult(r, ctx);
    return;
  }
  const text = textOf(content);
  if (/^\[Request interrupted/.test(text)) {
    ctx.add(metaLine('Interrupted', 'warn', f.uuid));
    return;
  }
  const known = state.prompts.get(f.uuid);
  if (known) {
    known.seq = f.sequence_num;
    ctx.add(known.node); // moves it from the outbox into its place in the log
    setPromptStatus(f.uuid, 'queued');
  } else {
    const status = ctx.earlier ? 'processed' : 'queued';
    const node = promptNode(f, status);
    state.prompts.set(f.uuid, { node, status, msg: f, seq: f.sequence_num });
    ctx.add(node);
  }
}

function renderAssistant(f, ctx) {
  const msg = f.message || {};
  const blocks = Array.isArray(msg.content) ? msg.content
    : (typeof msg.content === 'string' ? [{ type: 'text', text: msg.content }] : []);
  let texts = 0;
  blocks.forEach((b, i) => {
    if (!b) return;
    if (b.type === 'text' && b.text) {
      texts += 1;
      ctx.add(el('div', { class: 'msg assistant', dataset: { uuid: f.uuid || '', block: String(i) } }, markdown(b.text)));
    } else if (b.type === 'tool_use') {
      const card = toolCard(b, f, ctx);
      if (card) ctx.add(card);
    } else if (b.type === 'thinking' && b.thinking) {
      const thinking = el('details', { class: 'thinking' }, el('summary', {}, 'Thinking'),
        el('div', { class: 'thinking-text' }, b.thinking));
      ctx.add(thinking);
      watchScrollers(thinking);
    }
  });
  if (msg.id) finishStreams(msg.id, texts);
  if (f.error) ctx.add(metaLine(`Model error: ${f.error}`, 'error'));
}

function toolCard(block, f, ctx) {
  const id = block.id || `${f.uuid}:${block.name}`;
  if (state.tools.has(id)) return null;
  const name = String(block.name || 'tool');
  const { view, run } = inputView(name, block.input, false);
  const stateEl = el('span', { class: 'tool-state', dataset: { state: ctx.live ? 'running' : 'unknown' } },
    ctx.live ? 'running' : '');
  const resultEl = el('div', { class: 'tool-result', hidden: true });
  const card = el('details', { class: 'tool', dataset: { tool: id, uuid: f.uuid || '', name } },
    el('summary', {},
      el('span', { class: 'tool-name' }, name),
      el('span', { class: 'tool-sum' }, oneLine(name, block.input)),
      stateEl),
    el('div', { class: 'tool-body' }, el('div', { class: 'label' }, 'Input'), view, resultEl));
  card.addEventListener('toggle', () => { if (card.open) run(); });
  state.tools.set(id, { card, stateEl, resultEl, name, done: false });
  const decided = state.decisions.get(id);
  if (decided) setToolState(id, decided);
  return card;
}

function setToolState(id, value, label) {
  const t = state.tools.get(id);
  if (!t) return;
  t.stateEl.dataset.state = value;
  t.stateEl.textContent = label || value;
  t.card.classList.toggle('failed', ['error', 'denied', 'cancelled', 'stopped'].includes(value));
}

function resultText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((b) => {
      if (!b) return '';
      if (b.type === 'text') return b.text;
      if (b.type === 'image') return '[image]';
      return json(b);
    }).join('\n');
  }
  return content === undefined || content === null ? '' : json(content);
}

function attachResult(r, ctx) {
  const id = r.tool_use_id;
  let t = state.tools.get(id);
  if (!t) {
    // the call itself is on an earlier page of the history
    const card = toolCard({ id, name: 'Tool result', input: {} }, { uuid: '' }, ctx);
    if (card) ctx.add(card);
    t = state.tools.get(id);
    if (!t) return;
  }
  if (t.done) return;
  t.done = true;
  const text = resultText(r.content);
  const pre = el('pre', { class: 'result-text' }, text.length > MAX_RESULT_CHARS ? text.slice(0, MAX_RESULT_CHARS) : text);
  t.resultEl.replaceChildren(el('div', { class: 'label' }, r.is_error ? 'Error' : 'Result'), pre);
  if (text.length > MAX_RESULT_CHARS) {
    t.resultEl.append(el('button', {
      type: 'button',
      class: 'link',
      onclick: (ev) => { pre.textContent = text; ev.target.remove(); syncScrollable(pre); },
    }, `Show all ${text.length.toLocaleString()} characters`));
  }
  t.resultEl.hidden = false;
  watchScrollers(t.resultEl);
  const decided = state.decisions.get(id);
  if (r.is_error) {
    let why = decided === 'denied' || decided === 'cancelled' ? decided : 'error';
    if (why === 'error' && t.interrupted) why = 'stopped';
    setToolState(id, why, why);
  } else {
    setToolState(id, 'done', 'done');
  }
}

// Why an error result ended its turn, in words for a person (tether.protocol.messages.result_reason):
// its result text or errors, without the stock CLI's internal "[ede_diagnostic] …" lines.
function resultReason(f) {
  if (typeof f.result === 'string' && f.result) return f.result;
  const errors = Array.isArray(f.errors)
    ? f.errors.filter((e) => e && !String(e).startsWith('[ede_diagnostic]')) : [];
  if (errors.length) return errors.join('; ');
  if (String(f.terminal_reason || '').startsWith('aborted')) return 'Interrupted';
  return f.subtype || 'error';
}

function renderResult(f, ctx) {
  const failed = f.is_error || (f.subtype && f.subtype !== 'success');
  const parts = [];
  if (typeof f.duration_ms === 'number') parts.push(`${(f.duration_ms / 1000).toFixed(1)} s`);
  if (typeof f.num_turns === 'number') parts.push(`${f.num_turns} turn${f.num_turns === 1 ? '' : 's'}`);
  if (typeof f.total_cost_usd === 'number' && f.total_cost_usd > 0) parts.push(`$${f.total_cost_usd.toFixed(4)}`);
  let text;
  if (failed) {
    text = `Stopped: ${resultReason(f)}`;
  } else {
    text = `Done${parts.length ? ' · ' + parts.join(' · ') : ''}`;
  }
  ctx.add(metaLine(text, failed ? 'error result' : 'ok result', f.uuid));
  for (const [id, t] of state.tools) {
    if (!t.done && t.stateEl.dataset.state === 'running') setToolState(id, 'stopped', 'no result');
  }
  if (ctx.live) clearStreams();
}

function renderSystem(f, ctx) {
  if (f.subtype === 'tether_terminal') {
    onTerminal(f);
    return;
  }
  if (f.subtype === 'init') {
    state.model = f.model || state.model;
    updateInfo();
    return;
  }
  if (f.subtype === 'compact_boundary') ctx.add(metaLine('Context compacted', '', f.uuid));
  else if (f.subtype === 'warning') ctx.add(metaLine(String(f.message || 'Warning'), 'warn', f.uuid));
  else if (typeof f.subtype === 'string' && /error/.test(f.subtype)) {
    ctx.add(metaLine(`${f.subtype}: ${f.message || f.error || ''}`, 'error', f.uuid));
  }
}

function renderControlRequest(f, ctx) {
  const req = f.request || {};
  if (req.subtype === 'can_use_tool') {
    if (!ctx.earlier) showPermission(f);
  } else if (req.subtype === 'interrupt') {
    ctx.add(metaLine('Stop requested', 'warn', f.uuid));
    for (const t of state.tools.values()) if (!t.done) t.interrupted = true;
  } else if (req.subtype === 'set_permission_mode' && req.mode) {
    ctx.add(metaLine(`Permission mode: ${req.mode}`, '', f.uuid));
  } else if (req.subtype === 'set_model') {
    ctx.add(metaLine(`Model: ${req.model || 'default'}`, '', f.uuid));
  }
}

function renderControlResponse(f, ctx) {
  const resp = f.response || {};
  const rid = resp.request_id || resp.requestId || f.request_id;
  if (!rid) return;
  if (rid === state.terminalAsk) {
    state.terminalAsk = null;
    updateTerminal();
    if (resp.subtype === 'error') toast(resp.error || 'The terminal refused that.', 'error');
    return;
  }
  const decision = resp.response || {};
  const outcome = resp.subtype === 'success' ? (decision.behavior === 'allow' ? 'allowed' : 'denied') : 'error';
  const perm = state.perms.get(rid);
  const toolId = perm && perm.req.tool_use_id;
  resolvePermission(rid, outcome);
  if (perm) {
    const tool = perm ? perm.req.tool_name : 'tool';
    const msg = outcome === 'denied' && decision.message ? ` — “${decision.message}”` : '';
    ctx.add(metaLine(`${outcome === 'allowed' ? 'Allowed' : 'Denied'} ${tool}${msg}`, outcome === 'allowed' ? 'ok' : 'warn', f.uuid));
  }
  if (toolId) setToolState(toolId, outcome, outcome);
}

// Apply one stored event (from the history or the socket). One odd event never stops the rest.
function applyEvent(f, ctx) {
  if (f.uuid) {
    if (state.items.has(f.uuid)) return;
    state.items.add(f.uuid);
  }
  try {
    showEvent(f, ctx);
  } catch (err) {
    console.error(`could not show event ${f.sequence_num} (${f.type})`, err);
  }
}

function showEvent(f, ctx) {
  switch (f.type) {
    case 'user': renderUser(f, ctx); break;
    case 'assistant': renderAssistant(f, ctx); break;
    case 'result': renderResult(f, ctx); break;
    case 'system': renderSystem(f, ctx); break;
    case 'control_request': renderControlRequest(f, ctx); break;
    case 'control_response': renderControlResponse(f, ctx); break;
    case 'control_cancel_request':
      if (f.request_id) resolvePermission(f.request_id, 'cancelled');
      break;
    default: break;
  }
}

// ---- streaming (ephemeral stream_event frames) --------------------------------------------------
let currentMessage = null;

function onStreamEvent(f) {
  const e = f.event || {};
  if (e.type === 'message_start' && e.message) currentMessage = e.message.id;
  const id = f.api_message_id || currentMessage;
  if (!id) return;
  if (e.type === 'content_block_start' && e.content_block && e.content_block.type === 'text') {
    streamNode(id, e.index, true);
  } else if (e.type === 'content_block_delta' && e.delta && e.delta.type === 'text_delta') {
    const node = streamNode(id, e.index, true);
    if (node) sticky(() => { node.firstChild.textContent += e.delta.text; });
  }
}

function streamNode(id, index, create) {
  let s = state.streams.get(id);
  if (!s) {
    if (!create) return null;
    s = { nodes: [], done: 0 };
    state.streams.set(id, s);
  }
  const found = s.nodes.find((n) => n.index === index);
  if (found) return found.node;
  if (!create) return null;
  if (s.nodes.length < s.done) {
    // its final text is already in the transcript (the assistant event came first)
    s.nodes.push({ index, node: null });
    return null;
  }
  const node = el('div', { class: 'msg assistant streaming' }, el('div', { class: 'stream-text' }, ''));
  s.nodes.push({ index, node });
  sticky(() => streamBox.append(node));
  return node;
}

function finishStreams(id, texts) {
  let s = state.streams.get(id);
  if (!s) {
    s = { nodes: [], done: 0 };
    state.streams.set(id, s);
  }
  s.done += texts;
  s.nodes.forEach((n, pos) => {
    if (pos < s.done && n.node) {
      n.node.remove();
      n.node = null;
    }
  });
  if (state.streams.size > 200) state.streams.delete(state.streams.keys().next().value);
}

function clearStreams() {
  streamBox.replaceChildren();
  for (const s of state.streams.values()) for (const n of s.nodes) n.node = null;
}

// ---- permissions -----------------------------------------------------------------------------
let askCounter = 0;

function showPermission(f) {
  const rid = f.request_id;
  const req = f.request || {};
  if (!rid || state.perms.has(rid) || state.resolved.has(rid)) return;
  askCounter += 1;
  const hid = `ask-h-${askCounter}`;
  const mid = `ask-m-${askCounter}`;
  const tool = String(req.tool_name || 'a tool');
  const desc = req.title || req.description || null;
  const { view } = inputView(tool, req.input, true, desc);
  const message = el('input', { id: mid, type: 'text', class: 'deny-msg', autocomplete: 'off', placeholder: 'Why not, or what to do instead' });
  const status = el('p', { class: 'ask-status muted small', role: 'status' });
  const allow = el('button', { type: 'button', class: 'primary allow', onclick: () => answer(rid, 'allow') }, 'Allow');
  const deny = el('button', { type: 'button', class: 'deny', onclick: () => answer(rid, 'deny') }, 'Deny');
  message.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { ev.preventDefault(); answer(rid, 'deny'); } });
  const answerBox = CAN_WRITE ? el('div', { class: 'ask-answer' },
    el('label', { for: mid, class: 'small' }, 'Message for the agent (optional, sent with Deny)'), message,
    el('div', { class: 'row gap end' }, deny, allow), status) : null;
  const watchNote = el('p', { class: 'muted small ask-watch' },
    CAN_WRITE ? '' : 'Waiting for a member to answer (viewers cannot).');
  const card = el('article', { class: 'ask', dataset: { request: rid, tool }, 'aria-labelledby': hid },
    el('h2', { id: hid }, el('span', { class: 'ask-icon', 'aria-hidden': 'true' }, '!'), `Allow ${tool}?`),
    desc ? el('p', { class: 'ask-desc' }, desc) : null,
    view,
    el('details', { class: 'raw' }, el('summary', {}, 'Full input'), el('pre', {}, json(req.input || {}))),
    answerBox, watchNote);
  watchScrollers(card);
  const p = { card, seq: f.sequence_num || 0, req, status, allow, deny, message, answerBox, watchNote };
  showAnswerable(p, isMirror());
  state.perms.set(rid, p);
  if (req.tool_use_id) setToolState(req.tool_use_id, 'waiting', 'needs permission');
  sticky(() => asks.append(card));
  updateHeader();
}

// Allow/Deny where they can be given; on a mirror the question is answered at its terminal.
function showAnswerable(p, mirror) {
  if (p.answerBox) p.answerBox.hidden = mirror;
  if (mirror) p.watchNote.textContent = 'Watch only (mirror): this is answered at the terminal.';
  else if (CAN_WRITE) p.watchNote.textContent = '';
  p.watchNote.hidden = !p.watchNote.textContent;
}

function answer(rid, behavior) {
  const p = state.perms.get(rid);
  if (!p) return;
  const text = p.message.value.trim();
  const response = behavior === 'allow'
    ? { behavior: 'allow', updatedInput: p.req.input || {} }
    : { behavior: 'deny', message: text || 'Denied from the Tether web client.' };
  const frame = { type: 'control_response', response: { subtype: 'success', request_id: rid, response } };
  state.answers.set(rid, frame);
  p.allow.disabled = true;
  p.deny.disabled = true;
  p.card.classList.add('answering');
  p.status.textContent = behavior === 'allow' ? 'Allowing…' : 'Denying…';
  if (!sendFrame(frame)) p.status.textContent += ' (will send when reconnected)';
}

function resolvePermission(rid, outcome) {
  state.resolved.set(rid, outcome);
  state.answers.delete(rid);
  const p = state.perms.get(rid);
  if (!p) return;
  state.perms.delete(rid);
  if (p.req.tool_use_id) {
    state.decisions.set(p.req.tool_use_id, outcome);
    setToolState(p.req.tool_use_id, outcome, outcome);
  }
  p.card.remove();
  updateHeader();
}

// After each (re)connect: a request that was answered or cancelled while this page was away
// without it seeing the event (e.g. archived) must not linger.
async function reconcilePermissions(upTo) {
  try {
    const data = await api(`/v1/sessions/${SID}/permissions?status=pending`, { redirect: false });
    const pending = new Set(data.data.map((p) => p.request_id));
    for (const [rid, p] of state.perms) {
      if (!pending.has(rid) && p.seq <= upTo && !state.answers.has(rid)) resolvePermission(rid, 'resolved');
    }
  } catch (err) { loggedOutBy(err); /* else the next reconnect tries again */ }
}

// Delivery frames are live only: after each (re)connect, read where every stored prompt is.
// A prompt that is not among the undelivered inbound events has been processed.
async function syncDeliveries(upTo) {
  try {
    const data = await api(`/web/sessions/${SID}/undelivered`, { redirect: false });
    const open = new Map(data.data.map((d) => [d.uuid, d.status]));
    for (const [uuid, p] of state.prompts) {
      if (p.seq === null || p.seq === undefined || p.seq > upTo) continue;
      const status = open.get(uuid);
      setPromptStatus(uuid, status ? (DELIVERY[status] || 'queued') : 'processed');
    }
  } catch (err) { loggedOutBy(err); /* else the next reconnect tries again */ }
}

// A background call answered 401: the login ended (logged out elsewhere, revoked). The page
// stops as it does when its socket is closed with 4003 — whichever of the two comes first.
function loggedOutBy(err) {
  if (!(err instanceof ApiError && err.status === 401) || state.policy.stopped === 'unauthorized') return;
  state.policy.stopped = 'unauthorized';
  clearTimeout(state.reconnectTimer);
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  state.wsState = 'unauthorized';
  updateHeader();
}

// ---- the socket --------------------------------------------------------------------------------
function sendFrame(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function handleFrame(f) {
  if (!f || typeof f.type !== 'string') return;
  switch (f.type) {
    case 'keep_alive': return;
    case 'session_update': onSessionUpdate(f); return;
    case 'delivery_update': if (f.uuid && DELIVERY[f.status]) setPromptStatus(f.uuid, DELIVERY[f.status]); return;
    case 'error': onErrorFrame(f); return;
    default: break;
  }
  if (f.type === 'control_response' && typeof f.sequence_num !== 'number') {
    const rid = f.response && f.response.request_id;
    if (rid && state.interrupts.has(rid)) {
      state.interrupts.delete(rid);
      toast('Stop sent to the agent.');
    }
    return;
  }
  if (f.ephemeral) {
    if (f.type === 'stream_event') onStreamEvent(f);
    return;
  }
  if (typeof f.sequence_num !== 'number') return;
  if (f.sequence_num <= state.lastSeq) {
    // pending permission requests come again first on every connect
    if (f.type === 'control_request') showPermission(f);
    return;
  }
  state.lastSeq = f.sequence_num;
  sticky(() => applyEvent(f, mainCtx));
}

function onErrorFrame(f) {
  const err = f.error || {};
  const rid = f.request_id;
  if (rid && state.perms.has(rid)) {
    if (err.type === 'already_resolved' || err.type === 'not_found_error') {
      resolvePermission(rid, 'resolved');
      toast('That request was already answered elsewhere.');
      return;
    }
    const p = state.perms.get(rid);
    state.answers.delete(rid);
    p.allow.disabled = false;
    p.deny.disabled = false;
    p.card.classList.remove('answering');
    p.status.textContent = err.message || 'The answer was refused.';
    return;
  }
  if (rid && state.interrupts.has(rid)) {
    state.interrupts.delete(rid);
    setStopping(false);
  }
  if (rid && rid === state.terminalAsk) {
    state.terminalAsk = null;
    updateTerminal();
  }
  toast(err.message || 'The server refused that.', 'error');
}

function connect() {
  clearTimeout(state.reconnectTimer);
  waitForRetry(0);
  if (state.policy.stopped) return;
  if (state.ws && state.ws.readyState <= WebSocket.OPEN) return;
  const ws = new WebSocket(wsUrl(`/v1/sessions/ws/${SID}/subscribe?from_sequence_num=${state.lastSeq}`));
  state.ws = ws;
  ws.onopen = () => {
    if (state.ws !== ws) return;
    state.wsState = 'open';
    document.body.dataset.connects = String(Number(document.body.dataset.connects || 0) + 1);
    state.policy.opened();
    delete document.body.dataset.attempt;
    state.lastFrameAt = Date.now();
    for (const frame of state.answers.values()) ws.send(JSON.stringify(frame));
    sendHeldPrompts();
    const upTo = state.lastSeq;
    reconcilePermissions(upTo);
    syncDeliveries(upTo);
    refreshSession();
    updateHeader();
  };
  ws.onmessage = (ev) => {
    if (state.ws !== ws) return;
    state.lastFrameAt = Date.now();
    state.policy.heard();
    let f;
    try { f = JSON.parse(ev.data); } catch { return; }
    handleFrame(f);
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    const next = state.policy.closed(ev.code);
    if (!next.retry) {
      state.wsState = next.why; // 'unauthorized' (4003) or 'gone' (4001 after 3 tries)
      updateHeader();
      return;
    }
    state.wsState = 'reconnecting';
    state.retryWhy = next.why;
    document.body.dataset.attempt = String(next.attempt);
    state.reconnectTimer = setTimeout(connect, next.delayMs);
    waitForRetry(next.delayMs);
    updateHeader();
  };
}

// The waiting reconnect's countdown under the health line (0: none waits).
function waitForRetry(ms) {
  clearInterval(state.retryTicker);
  state.retryTicker = null;
  state.retryAt = ms ? Date.now() + ms : 0;
  if (ms >= 1500) state.retryTicker = setInterval(updateHeader, 1000);
}

function reconnectNow() {
  if (!state.policy.retryNow()) return; // stopped for good: logged out, or the session is gone
  if (!state.ws || state.ws.readyState > WebSocket.OPEN) {
    connect();
    return;
  }
  // the socket may be dead after a sleep: ask, and replace it if nothing answers
  const asked = Date.now();
  sendFrame({ type: 'keep_alive' });
  setTimeout(() => {
    if (state.ws && state.lastFrameAt < asked) state.ws.close(4000, 'no answer');
  }, 4000);
}
retryBtn.addEventListener('click', reconnectNow);

setInterval(() => {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastFrameAt > 45000) state.ws.close(4000, 'silent');
  else sendFrame({ type: 'keep_alive' });
}, 20000);
document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') reconnectNow(); });
window.addEventListener('online', reconnectNow);
window.addEventListener('pageshow', (ev) => { if (ev.persisted) reconnectNow(); });

// ---- session state, header and health ------------------------------------------------------------
function onSessionUpdate(f) {
  if (!state.session) return;
  if (f.status) state.session.session_status = f.status;
  if (typeof f.title === 'string' && f.title) state.session.title = f.title;
  if (f.worker) state.session.worker = { ...state.session.worker, ...f.worker };  // health: at once
  updateHeader();
  clearTimeout(onSessionUpdate.timer);
  onSessionUpdate.timer = setTimeout(refreshSession, 300);
}

async function refreshSession() {
  // logged out (4003): the page stopped; a call now would only be sent to the login page
  if (state.policy.stopped === 'unauthorized') return;
  try {
    state.session = await api(`/v1/sessions/${SID}`, { redirect: false });
    updateHeader();
  } catch (err) {
    loggedOutBy(err);
    if (err instanceof ApiError && err.status === 404) {
      state.wsState = 'gone';
      updateHeader();
    }
  }
}

function healthOf() {
  const s = state.session;
  if (state.wsState === 'gone') return ['bad', 'Session not found'];
  if (state.wsState === 'unauthorized') return ['bad', 'Logged out or access revoked'];
  if (state.wsState === 'reconnecting') {
    if (state.retryWhy === 'not_found') return ['warn', 'Session not found · checking again'];
    return ['warn', state.retryAt ? 'Offline · reconnecting' : 'Reconnecting…'];
  }
  if (state.wsState === 'connecting' || !s) return ['warn', 'Connecting…'];
  const status = s.session_status;
  if (status === 'archived') return ['off', 'Archived · read-only'];
  const online = s.environment ? s.environment.online : null;
  const connected = s.worker && s.worker.connected;
  if (status === 'requires_action' || state.perms.size) return ['attn', 'Waiting for you'];
  if (online === false) {
    return ['bad', status === 'running' ? 'Machine offline · your prompt waits for it' : 'Machine offline'];
  }
  const t = state.terminal;
  if (t && t.waiting_at_terminal && t.state !== 'ended') return ['attn', 'Waiting at the terminal'];
  if (t && t.state === 'local') return status === 'running' ? ['busy', 'Working at the terminal…'] : ['ok', 'At the terminal'];
  if (status === 'running') return connected ? ['busy', 'Working…'] : ['warn', 'Queued · waiting for the worker'];
  if (connected) return ['ok', 'Worker connected · idle'];
  return ['idle', online ? 'Machine online · the worker starts with your next prompt' : 'No worker connected'];
}

// While the socket is down the last known status may be stale: no status badge and no Stop then,
// and the composer says that what is sent now waits for the connection (see dispatchPrompt).
function updateHeader() {
  const s = state.session;
  const live = state.wsState === 'open';
  const stopped = Boolean(state.policy.stopped) || state.wsState === 'gone';
  document.body.dataset.socket = state.wsState;
  const [kind, text] = healthOf();
  health.dataset.state = kind;
  health.querySelector('.text').textContent = text;
  showRetry();
  showAccess();
  showOffline(state.wsState === 'reconnecting');
  const mirror = isMirror();
  document.body.dataset.mirror = String(mirror);
  for (const p of state.perms.values()) showAnswerable(p, mirror);
  if (s) {
    const title = s.title || 'Untitled session';
    if (titleEl.textContent !== title) titleEl.textContent = title;
    document.title = `${title} · Tether`;
    const status = s.session_status;
    badgeEl.hidden = !live;
    badgeEl.className = `badge s-${status}`;
    badgeEl.textContent = STATUS_LABEL[status] || status;
    const archived = status === 'archived';
    const busy = status === 'running' || status === 'requires_action';
    stopBtn.hidden = !CAN_WRITE || archived || !busy || !live || mirror;
    if (!busy) setStopping(false);
    composer.hidden = !CAN_WRITE || archived || mirror || stopped;
    mirrorBox.hidden = !mirror || archived;
    $('archive').disabled = archived || !CAN_WRITE;
    $('rename').disabled = !CAN_WRITE;
    if (archived) {
      for (const rid of [...state.perms.keys()]) resolvePermission(rid, 'expired');
    }
    showEnded(s);
  }
  updateTerminal();
}

// A mirror session (tag ccr-mirror, docs/protocol.md §12.9) is driven at its terminal only: the
// server refuses prompts, answers and interrupts from clients, so the page does not offer them.
function isMirror() {
  return Boolean(state.session && (state.session.tags || []).includes(MIRROR_TAG));
}

function showRetry() {
  const waiting = state.wsState === 'reconnecting' && state.retryAt > 0;
  retryBox.hidden = !waiting;
  if (waiting) retryIn.textContent = `Next try in ${Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000))} s.`;
}

function showAccess() {
  const out = state.wsState === 'unauthorized';
  if (accessBox.hidden === !out) return;
  accessBox.hidden = !out;
  if (!out) return;
  const next = encodeURIComponent(location.pathname);
  accessBox.replaceChildren(
    el('strong', {}, 'Logged out or access revoked.'),
    ' This page stopped following the session: your login ended, was revoked, or your role no longer allows it. ',
    el('a', { href: `/login?next=${next}`, id: 'login-again' }, 'Log in again'));
  for (const p of state.perms.values()) {
    if (p.allow) p.allow.disabled = p.deny.disabled = true;
  }
}

function showOffline(offline) {
  if ((composer.dataset.offline === 'true') === offline) return;
  composer.dataset.offline = String(offline);
  sendBtn.querySelector('.btn-label').textContent = offline ? 'Queue' : 'Send';
  sendBtn.setAttribute('aria-label', offline ? 'Queue (sends once reconnected)' : 'Send');
  composerHint.textContent = offline
    ? 'Reconnecting… A prompt you send now waits here and goes out once the connection is back.'
    : 'Enter to send · Shift+Enter for a new line';
}

// Why an archived session ended (archive_reason) and where its work went on (successor_session_id).
const ENDED_BECAUSE = {
  user: 'It was archived by a person.',
  bridge_stopped: 'Its bridge was stopped.',
  bridge_failed: 'Its bridge stopped after an error.',
  session_ended: 'Its agent exited.',
  session_timeout: 'It ran longer than its bridge’s session timeout.',
  replaced: 'A new bridge in the same directory started a fresh session.',
  start_failed: 'The runner could not prepare it (see the last message).',
};
// endings whose successor a restarting bridge creates a moment later (tether.protocol.archive)
const SUCCEEDED = new Set(['replaced', 'bridge_failed']);

function showEnded(s) {
  const box = $('ended');
  if (s.session_status !== 'archived') {
    box.hidden = true;
    return;
  }
  const why = ENDED_BECAUSE[s.archive_reason];
  const parts = [el('strong', {}, 'This session has ended.'), why ? ` ${why}` : ''];
  if (s.successor_session_id) {
    parts.push(' ', el('a', { href: `/code/${s.successor_session_id}`, id: 'successor' }, 'Continue in the next session →'));
  } else if (SUCCEEDED.has(s.archive_reason)) {
    watchSuccessor();
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

function watchSuccessor() {
  if (watchSuccessor.timer || (watchSuccessor.tries || 0) >= 24) return;
  watchSuccessor.tries = (watchSuccessor.tries || 0) + 1;
  watchSuccessor.timer = setTimeout(async () => {
    watchSuccessor.timer = null;
    await refreshSession();
  }, 5000);
}

// ---- a `tether claude` session: the terminal or this page drives it -----------------------------
function onTerminal(f) {
  const seq = typeof f.sequence_num === 'number' ? f.sequence_num : 0;
  if (state.terminal && seq < state.terminalSeq) return; // from an earlier page of the history
  state.terminal = f;
  state.terminalSeq = seq;
  state.terminalAsk = null;
  updateHeader();
}

function updateTerminal() {
  const t = state.terminal;
  const archived = state.session && state.session.session_status === 'archived';
  terminalBar.hidden = !t || archived || t.state === 'ended';
  if (terminalBar.hidden) return;
  terminalBar.dataset.state = t.waiting_at_terminal ? 'waiting' : t.state;
  const movable = CAN_WRITE && t.can_take_over !== false && !isMirror(); // a mirror is watched, never taken over
  const text = movable && t.state === 'local' && !t.waiting_at_terminal
    ? `${t.detail} · a prompt from here takes it over` : t.detail;
  terminalBar.querySelector('.text').textContent = text || t.state;
  takeOverBtn.hidden = !movable || t.state !== 'local';
  returnBtn.hidden = !movable || t.state !== 'remote';
  takeOverBtn.disabled = returnBtn.disabled = Boolean(state.terminalAsk);
}

async function terminalRequest(subtype) {
  const rid = newUuid();
  const frame = { type: 'control_request', request_id: rid, request: { subtype } };
  state.terminalAsk = rid;
  updateTerminal();
  if (sendFrame(frame)) return;
  try {
    await api(`/v1/sessions/${SID}/events`, { method: 'POST', json: { events: [{ ...frame, uuid: newUuid() }] } });
  } catch (err) {
    state.terminalAsk = null;
    updateTerminal();
    toast(err.message, 'error');
  }
}
takeOverBtn.addEventListener('click', () => terminalRequest('tether_take_over'));
returnBtn.addEventListener('click', () => terminalRequest('tether_return_to_terminal'));

function updateInfo() {
  const info = $('env-info');
  const env = state.env;
  const parts = [];
  if (env) parts.push(`${env.machine_name} · ${env.directory}${env.branch ? ` (${env.branch})` : ''}`);
  if (state.model) parts.push(`model ${state.model}`);
  parts.push(SID);
  info.textContent = parts.join(' — ');
}

async function loadEnvironment() {
  try {
    if (!state.session || !state.session.environment_id) return;
    const envs = await api('/v1/environments?all=true');
    state.env = envs.data.find((e) => e.id === state.session.environment_id) || null;
    updateInfo();
  } catch { /* informational */ }
}

// ---- history -------------------------------------------------------------------------------------
async function loadHistory() {
  const page = await api(`/v1/sessions/${SID}/events?limit=${PAGE}`);
  const ctx = { add: (node) => transcript.append(node), live: false, earlier: false, history: true };
  for (const f of page.data) {
    if (typeof f.sequence_num === 'number' && f.sequence_num > state.lastSeq) state.lastSeq = f.sequence_num;
    applyEvent(f, ctx);
  }
  state.hasMore = page.has_more;
  state.firstId = page.first_id;
  earlierBtn.hidden = !state.hasMore;
  scrollToBottom();
}

earlierBtn.addEventListener('click', async () => {
  if (!state.firstId) return;
  earlierBtn.disabled = true;
  try {
    const page = await api(`/v1/sessions/${SID}/events?limit=${PAGE}&before_id=${encodeURIComponent(state.firstId)}`);
    const frag = document.createDocumentFragment();
    const ctx = { add: (node) => frag.append(node), live: false, earlier: true };
    for (const f of page.data) applyEvent(f, ctx);
    const before = document.documentElement.scrollHeight;
    transcript.prepend(frag);
    window.scrollBy(0, document.documentElement.scrollHeight - before);
    state.firstId = page.first_id;
    earlierBtn.hidden = !page.has_more;
  } catch (err) {
    toast(err.message, 'error');
  } finally {
    earlierBtn.disabled = false;
  }
});

// ---- the composer -------------------------------------------------------------------------------
function autosize() {
  promptBox.style.height = 'auto';
  promptBox.style.height = `${Math.min(promptBox.scrollHeight, Math.round(window.innerHeight * 0.4))}px`;
}
promptBox.addEventListener('input', autosize);
promptBox.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
    ev.preventDefault();
    composer.requestSubmit();
  }
});

composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = promptBox.value.trim();
  const uploading = state.attachments.some((a) => a.status === 'uploading');
  if (uploading) {
    toast('Wait for the attachments to finish uploading.');
    return;
  }
  const files = state.attachments.filter((a) => a.status === 'ready');
  if (!text && !files.length) return;
  sendPrompt(text || 'See the attached files.', files);
  promptBox.value = '';
  autosize();
  state.attachments = [];
  attachList.replaceChildren();
});

function sendPrompt(text, files) {
  const uuid = newUuid();
  const msg = { type: 'user', uuid, session_id: '', parent_tool_use_id: null, message: { role: 'user', content: text } };
  if (files.length) msg.file_attachments = files.map((a) => ({ file_uuid: a.file_uuid, file_name: a.file_name }));
  const node = promptNode(msg, 'sending');
  state.prompts.set(uuid, { node, status: 'sending', msg, seq: null, posting: false });
  outbox.append(node);
  scrollToBottom();
  dispatchPrompt(uuid);
}

// A prompt goes out at once while the socket is open. Typed while it is down, it is held here
// (shown as queued) and POSTed when the socket is back, in the order typed. One POST per prompt is
// in flight at a time, and every attempt carries the prompt's uuid, of which the server keeps one
// event: a retry after an unclear failure can never make a second prompt.
function dispatchPrompt(uuid, attempt = 0) {
  if (state.wsState === 'open') postPrompt(uuid, attempt);
  else setPromptStatus(uuid, 'held');
}

async function sendHeldPrompts() {
  const held = [...state.prompts].filter(([, p]) => p.status === 'held').map(([uuid]) => uuid);
  for (const uuid of held) await postPrompt(uuid, 0);
}

async function postPrompt(uuid, attempt) {
  const p = state.prompts.get(uuid);
  if (!p || p.posting) return;
  p.posting = true;
  setPromptStatus(uuid, attempt ? 'retrying' : 'sending');
  try {
    await api(`/v1/sessions/${SID}/events`, { method: 'POST', json: { events: [p.msg] } });
    p.posting = false;
    setPromptStatus(uuid, 'queued');
  } catch (err) {
    p.posting = false;
    if (!(err instanceof ApiError && err.retryable && attempt < 50)) {
      setPromptStatus(uuid, 'failed', err.message);
    } else if (state.wsState !== 'open') {
      setPromptStatus(uuid, 'held'); // the server is away: the reconnect sends it
    } else {
      setPromptStatus(uuid, 'retrying');
      setTimeout(() => dispatchPrompt(uuid, attempt + 1), Math.min(8000, 400 * 2 ** attempt));
    }
  }
}

stopBtn.addEventListener('click', async () => {
  const rid = newUuid();
  const frame = { type: 'control_request', request_id: rid, request: { subtype: 'interrupt' } };
  setStopping(true);
  state.interrupts.add(rid);
  if (sendFrame(frame)) return;
  try {
    await api(`/v1/sessions/${SID}/events`, { method: 'POST', json: { events: [{ ...frame, uuid: newUuid() }] } });
    toast('Stop sent to the agent.');
  } catch (err) {
    setStopping(false);
    toast(err.message, 'error');
  }
});

function setStopping(on) {
  stopBtn.disabled = on;
  stopBtn.querySelector('.btn-label').textContent = on ? 'Stopping…' : 'Stop';
  stopBtn.setAttribute('aria-label', on ? 'Stopping' : 'Stop');
}

// attachments: upload at once (POST /v1/files), send their ids with the prompt
function addFiles(list) {
  for (const file of list) {
    const item = { id: newUuid(), file_uuid: null, file_name: file.name || 'file', status: 'uploading' };
    const label = el('span', { class: 'att-name' }, item.file_name);
    const st = el('span', { class: 'att-state muted small' }, 'uploading…');
    const remove = el('button', {
      type: 'button', class: 'link', 'aria-label': `Remove ${item.file_name}`,
      onclick: () => {
        state.attachments = state.attachments.filter((a) => a !== item);
        item.node.remove();
      },
    }, '✕');
    item.node = el('li', { class: 'att' }, label, st, remove);
    attachList.append(item.node);
    state.attachments.push(item);
    const form = new FormData();
    form.append('file', file, item.file_name);
    api('/v1/files', { method: 'POST', form }).then((res) => {
      item.file_uuid = res.file_uuid;
      item.file_name = res.file_name;
      item.status = 'ready';
      st.textContent = `${Math.max(1, Math.round(res.size / 1024))} KB`;
    }).catch((err) => {
      item.status = 'failed';
      st.textContent = `failed: ${err.message}`;
      item.node.classList.add('error');
    });
  }
}
fileInput.addEventListener('change', () => {
  addFiles([...fileInput.files]);
  fileInput.value = '';
});
promptBox.addEventListener('paste', (ev) => {
  const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
  if (files.length) {
    ev.preventDefault();
    addFiles(files);
  }
});
composer.addEventListener('dragover', (ev) => { ev.preventDefault(); composer.classList.add('drop'); });
composer.addEventListener('dragleave', () => composer.classList.remove('drop'));
composer.addEventListener('drop', (ev) => {
  ev.preventDefault();
  composer.classList.remove('drop');
  if (ev.dataTransfer) addFiles([...ev.dataTransfer.files]);
});

// ---- rename and archive -------------------------------------------------------------------------
const renameDialog = $('rename-dialog');
const archiveDialog = $('archive-dialog');
const menu = $('menu');
$('rename').addEventListener('click', () => {
  menu.open = false;
  $('rn-input').value = state.session ? state.session.title : titleEl.textContent;
  openDialog(renameDialog, $('rn-input'));
});
$('rn-cancel').addEventListener('click', () => closeDialog(renameDialog));
$('rename-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const title = $('rn-input').value.trim();
  if (!title) return;
  try {
    state.session = await api(`/v1/sessions/${SID}`, { method: 'PATCH', json: { title } });
    closeDialog(renameDialog);
    updateHeader();
  } catch (err) {
    toast(err.message, 'error');
  }
});
$('archive').addEventListener('click', () => {
  menu.open = false;
  openDialog(archiveDialog);
});
$('ar-cancel').addEventListener('click', () => closeDialog(archiveDialog));
$('archive-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    state.session = await api(`/v1/sessions/${SID}/archive`, { method: 'POST', json: { reason: 'user' } });
  } catch (err) {
    if (!(err instanceof ApiError && err.type === 'already_archived')) {
      toast(err.message, 'error');
      return;
    }
    await refreshSession();
  }
  closeDialog(archiveDialog);
  updateHeader();
});
document.addEventListener('click', (ev) => {
  if (menu.open && !menu.contains(ev.target)) menu.open = false;
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && menu.open) {
    menu.open = false;
    menu.querySelector('summary').focus();
  }
});

// ---- start ---------------------------------------------------------------------------------------
async function start() {
  await refreshSession();
  try {
    await loadHistory();
  } catch (err) {
    toast(`Could not load the transcript: ${err.message}`, 'error');
  }
  connect();
  loadEnvironment();
  whileVisible(refreshSession, 5000);
  setInterval(() => refreshTimes(transcript), 30000);
}
start();

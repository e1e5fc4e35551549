// /settings: personal API tokens, the organisation's Remote Control policy, members and roles.
import { api, el, timeEl, toast, ROLE } from './common.js';

const OWNER = ROLE === 'owner';
const tokenList = document.getElementById('tokens');
const tokenForm = document.getElementById('token-form');
const tokenSecret = document.getElementById('token-secret');
const policy = document.getElementById('policy-rc');
const memberList = document.getElementById('members');
const memberForm = document.getElementById('member-form');
const memberLink = document.getElementById('member-link');

function secretBox(box, title, secret, note) {
  const input = el('input', { type: 'text', readonly: true, value: secret, 'aria-label': title, class: 'mono' });
  const copy = el('button', {
    type: 'button', onclick: async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(secret);
        toast('Copied.');
      } catch {
        document.execCommand('copy');
      }
    },
  }, 'Copy');
  box.replaceChildren(el('strong', {}, title), el('div', { class: 'row gap' }, input, copy), el('p', { class: 'muted small' }, note));
  box.hidden = false;
  input.focus();
  input.select();
}

async function loadTokens() {
  try {
    const data = await api('/v1/tokens');
    if (!data.data.length) {
      tokenList.replaceChildren(el('li', { class: 'muted' }, 'No personal tokens.'));
      return;
    }
    tokenList.replaceChildren(...data.data.map((t) => el('li', { class: 'token', dataset: { token: t.id } },
      el('div', {},
        el('strong', {}, t.name),
        el('div', { class: 'muted small' }, 'created ', timeEl(t.created_at),
          ' · ', t.expires_at ? ['expires ', new Date(t.expires_at).toLocaleDateString()] : 'never expires',
          ' · last used ', timeEl(t.last_used_at))),
      el('button', { type: 'button', class: 'danger small-btn', 'aria-label': `Revoke ${t.name}`, onclick: () => revoke(t) }, 'Revoke'))));
  } catch (err) {
    tokenList.replaceChildren(el('li', { class: 'error' }, err.message));
  }
}

async function revoke(t) {
  try {
    await api(`/v1/tokens/${encodeURIComponent(t.id)}`, { method: 'DELETE' });
    toast(`Revoked “${t.name}”.`);
    loadTokens();
  } catch (err) {
    toast(err.message, 'error');
  }
}

tokenForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = document.getElementById('token-name').value.trim();
  const days = document.getElementById('token-expiry').value;
  const body = { name };
  if (days) body.expires_in_days = Number(days);
  try {
    const t = await api('/v1/tokens', { method: 'POST', json: body });
    secretBox(tokenSecret, `Token “${t.name}”`, t.token, 'Copy it now: it is not shown again.');
    tokenForm.reset();
    loadTokens();
  } catch (err) {
    toast(err.message, 'error');
  }
});

async function loadMe() {
  try {
    const me = await api('/v1/me');
    document.getElementById('org-name').textContent = me.organization.name;
    policy.checked = !!me.policy.allow_remote_control;
  } catch (err) {
    toast(err.message, 'error');
  }
}

policy.addEventListener('change', async () => {
  const wanted = policy.checked;
  policy.disabled = true;
  try {
    await api('/v1/org/policy', { method: 'PUT', json: { allow_remote_control: wanted } });
    toast(wanted ? 'Remote Control is allowed.' : 'Remote Control is off for the organisation.');
  } catch (err) {
    policy.checked = !wanted;
    toast(err.message, 'error');
  } finally {
    policy.disabled = !OWNER;
  }
});

async function loadMembers() {
  try {
    const data = await api('/web/members');
    memberList.replaceChildren(...data.data.map((m) => {
      const roleId = `role-${m.id}`;
      const role = OWNER
        ? el('select', { id: roleId, 'aria-label': `Role of ${m.email}`, onchange: (ev) => setRole(m, ev.target) },
          ['owner', 'member', 'viewer'].map((r) => el('option', { value: r, selected: r === m.role }, r)))
        : el('span', { class: 'tag' }, m.role);
      return el('li', { class: 'member' },
        el('div', {}, el('strong', {}, m.email), m.you ? el('span', { class: 'muted small' }, ' (you)') : null,
          el('div', { class: 'muted small' }, 'joined ', timeEl(m.created_at))),
        role);
    }));
  } catch (err) {
    memberList.replaceChildren(el('li', { class: 'error' }, err.message));
  }
}

async function setRole(member, select) {
  try {
    await api(`/web/members/${encodeURIComponent(member.id)}`, { method: 'PATCH', json: { role: select.value } });
    toast(`${member.email} is now ${select.value}.`);
    member.role = select.value;
  } catch (err) {
    select.value = member.role;
    toast(err.message, 'error');
  }
}

if (memberForm) {
  memberForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const email = document.getElementById('member-email').value.trim();
    const role = document.getElementById('member-role').value;
    try {
      const m = await api('/web/members', { method: 'POST', json: { email, role } });
      secretBox(memberLink, `One-time login link for ${m.email}`, m.login_link,
        'Send it to them privately; it works once. They can set a password with `tether admin set-password` on the server.');
      memberForm.reset();
      loadMembers();
    } catch (err) {
      toast(err.message, 'error');
    }
  });
}

loadMe();
loadTokens();
loadMembers();

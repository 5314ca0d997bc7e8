// Applications and their devices: lists, search, create/edit/delete, and the device form
// (which also sets the OTAA AppKey).

import { get, post, put, del, enc } from '../api.js';
import { h, add, pageHeader, table, field, select, showAlert, clearAlert, section } from '../dom.js';
import { go } from '../router.js';
import { ago, absolute, randomHex } from '../format.js';

export async function applicationsPage(main, _params, ctx) {
  main.append(pageHeader('Applications', 'Devices are grouped by application; events go to application/{id}/…', h('a', { href: '#/applications/new', class: 'button primary' }, 'Add application')));
  const list = await get('/applications?limit=1000', { signal: ctx.signal });
  if (!ctx.active) return;
  if (!list.result.length) main.append(h('div', { class: 'card empty' }, h('p', null, 'No applications yet.'), h('p', { class: 'muted' }, 'Create one, then a device profile, then register devices in the application.')));
  main.append(
    table(
      { id: 'applications', class: 'data' },
      ['Name', 'Description', 'ID', 'Created'],
      list.result.map((a) =>
        h(
          'tr',
          { 'data-id': a.id },
          h('td', { 'data-label': 'Name' }, h('a', { href: '#/applications/' + a.id }, a.name)),
          h('td', { 'data-label': 'Description' }, a.description || ''),
          h('td', { 'data-label': 'ID', class: 'mono small' }, a.id),
          h('td', { 'data-label': 'Created' }, h('time', { datetime: a.createdAt, title: absolute(a.createdAt) }, ago(a.createdAt))),
        ),
      ),
    ),
  );
}

export async function applicationFormPage(main, params, ctx) {
  const editing = Boolean(params.id);
  const app = editing ? await get('/applications/' + enc(params.id), { signal: ctx.signal }) : { name: '', description: '' };
  if (!ctx.active) return;
  const form = h(
    'form',
    { 'data-form': 'application', class: 'card form', novalidate: true },
    field('Name', h('input', { name: 'name', value: app.name, required: true, maxlength: 100 })),
    field('Description', h('textarea', { name: 'description', rows: 3 }, app.description || '')),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create application'), h('a', { href: editing ? '#/applications/' + app.id : '#/applications', class: 'button' }, 'Cancel')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const body = { name: form.elements.name.value, description: form.elements.description.value };
    try {
      const saved = editing ? await put('/applications/' + enc(app.id), body) : await post('/applications', body);
      go('/applications/' + saved.id);
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  main.append(pageHeader(editing ? 'Edit application' : 'Add application', editing ? app.id : null), form);
  form.elements.name.focus();
}

export async function applicationPage(main, params, ctx) {
  const id = params.id;
  const [app, devices, profiles] = await Promise.all([
    get('/applications/' + enc(id), { signal: ctx.signal }),
    get('/devices?limit=1000&applicationId=' + enc(id), { signal: ctx.signal }),
    get('/device-profiles?limit=1000', { signal: ctx.signal }).catch(() => ({ result: [] })),
  ]);
  if (!ctx.active) return;
  const profileName = new Map(profiles.result.map((p) => [p.id, p.name]));
  const remove = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
  remove.addEventListener('click', async () => {
    if (!confirm(`Delete application ${app.name} and its ${devices.totalCount} devices?`)) return;
    try {
      await del('/applications/' + enc(id));
      go('/applications');
    } catch (e) {
      showAlert(main, e.message);
    }
  });
  main.append(
    pageHeader(app.name, app.description || app.id, h('a', { href: `#/applications/${enc(id)}/edit`, class: 'button' }, 'Edit'), remove),
  );
  const search = h('input', { name: 'search', type: 'search', placeholder: 'Name or DevEUI', autocomplete: 'off', spellcheck: 'false' });
  const searchId = (search.id = 'device-search');
  const count = h('span', { class: 'muted', 'aria-live': 'polite' });
  const rows = devices.result.map((d) =>
    h(
      'tr',
      { 'data-id': d.devEui },
      h('td', { 'data-label': 'Name' }, h('a', { href: '#/devices/' + d.devEui }, d.name)),
      h('td', { 'data-label': 'DevEUI', class: 'mono' }, d.devEui),
      h('td', { 'data-label': 'Profile' }, profileName.get(d.deviceProfileId) || d.deviceProfileId),
      h('td', { 'data-label': 'DevAddr', class: 'mono' }, d.devAddr || '—'),
      h('td', { 'data-label': 'Last seen' }, h('time', { datetime: d.lastSeenAt || '', title: absolute(d.lastSeenAt) }, ago(d.lastSeenAt))),
    ),
  );
  const filter = () => {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    devices.result.forEach((d, i) => {
      const match = !q || d.name.toLowerCase().includes(q) || d.devEui.includes(q.replace(/[\s:-]/g, ''));
      rows[i].hidden = !match;
      if (match) shown++;
    });
    count.textContent = q ? `${shown} of ${devices.result.length} devices` : `${devices.totalCount} devices`;
  };
  search.addEventListener('input', filter);
  main.append(
    section(
      'Devices',
      null,
      h(
        'div',
        { class: 'toolbar' },
        h('label', { for: searchId, class: 'visually-hidden' }, 'Search devices'),
        search,
        count,
        h('a', { href: `#/applications/${enc(id)}/devices/new`, class: 'button primary' }, 'Add device'),
      ),
      devices.result.length ? null : h('p', { class: 'muted' }, 'No devices in this application yet.'),
      table({ id: 'devices', class: 'data' }, ['Name', 'DevEUI', 'Profile', 'DevAddr', 'Last seen'], rows),
    ),
  );
  filter();
}

/** params: { applicationId } to create, { devEui } to edit. */
export async function deviceFormPage(main, params, ctx) {
  const editing = Boolean(params.devEui);
  const device = editing ? await get('/devices/' + enc(params.devEui), { signal: ctx.signal }) : null;
  const applicationId = device?.applicationId || params.applicationId;
  const [profiles, app] = await Promise.all([
    get('/device-profiles?limit=1000', { signal: ctx.signal }),
    get('/applications/' + enc(applicationId), { signal: ctx.signal }),
  ]);
  if (!ctx.active) return;
  const d = device || { devEui: '', name: '', deviceProfileId: profiles.result[0]?.id, joinEui: '0000000000000000', description: '' };
  const form = h('form', { 'data-form': 'device', class: 'card form', novalidate: true });
  const hexInput = (name, value, length, attrs) =>
    h('input', Object.assign({ name, value: value ?? '', maxlength: length, pattern: `[0-9a-fA-F]{${length}}`, class: 'mono', autocomplete: 'off', spellcheck: 'false' }, attrs));
  const withGenerate = (input, bytes) => {
    const b = h('button', { type: 'button', class: 'small', title: 'Fill in random bytes' }, 'Generate');
    b.addEventListener('click', () => (input.value = randomHex(bytes)));
    return h('div', { class: 'input-row' }, input, b);
  };
  const devEui = hexInput('devEui', d.devEui, 16, { required: true, readonly: editing });
  const devEuiField = field('DevEUI', editing ? devEui : withGenerate(devEui, 8), '16 hex characters, printed on the device.');
  const profileSelect = select('deviceProfileId', profiles.result.map((p) => [p.id, p.name]), d.deviceProfileId);
  const appKey = hexInput('appKey', '', 32, {});
  const appKeyField = field('AppKey (OTAA)', withGenerate(appKey, 16), '32 hex characters; the root key the device joins with.');
  const otaa = () => profiles.result.find((p) => p.id === profileSelect.value)?.supportsOtaa;
  const showKey = () => {
    const on = Boolean(otaa()) && !editing;
    appKeyField.hidden = !on;
    appKey.disabled = !on;
  };
  profileSelect.addEventListener('change', showKey);
  add(
    form,
    profiles.result.length ? null : h('p', { class: 'notice' }, 'Create a device profile first: ', h('a', { href: '#/device-profiles/new' }, 'add device profile'), '.'),
    devEuiField,
    field('Name', h('input', { name: 'name', value: d.name, required: true, maxlength: 100 })),
    field('Device profile', profileSelect),
    field('JoinEUI', hexInput('joinEui', d.joinEui, 16, {}), 'Also called AppEUI; all zeros when the device has none.'),
    field('Description', h('textarea', { name: 'description', rows: 2 }, d.description || '')),
    appKeyField,
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create device'), h('a', { href: editing ? '#/devices/' + d.devEui : '#/applications/' + applicationId, class: 'button' }, 'Cancel')),
  );
  showKey();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const f = form.elements;
    const body = {
      devEui: f.devEui.value.trim(),
      name: f.name.value,
      applicationId,
      deviceProfileId: f.deviceProfileId.value,
      joinEui: f.joinEui.value.trim() || undefined,
      description: f.description.value,
    };
    if (editing) Object.assign(body, { skipFcntCheck: d.skipFcntCheck, isDisabled: d.isDisabled, tags: d.tags });
    try {
      const key = !appKey.disabled ? appKey.value.trim() : '';
      if (!editing && otaa() && !/^[0-9a-fA-F]{32}$/.test(key)) throw new Error('appKey: expected 32 hex characters (or Generate one)');
      const saved = editing ? await put('/devices/' + enc(d.devEui), body) : await post('/devices', body);
      if (key) {
        try {
          await put(`/devices/${enc(saved.devEui)}/keys`, { appKey: key });
        } catch (e) {
          // The device exists now; its page lets the user set the key again.
          throw new Error(`The device was created, but its key was not stored: ${e.message}`);
        }
      }
      go('/devices/' + saved.devEui);
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  main.append(pageHeader(editing ? 'Edit device' : 'Add device', `in ${app.name}`), form);
  (editing ? form.elements.name : devEui).focus();
}

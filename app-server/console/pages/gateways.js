// Gateways: list, create/edit form, and the gateway page with its counts and the live feed of
// the raw frames it forwards (accepted or not, with the reason).

import { get, post, put, del, enc } from '../api.js';
import { h, add, replace, pageHeader, section, table, pill, field, select, facts, showAlert, clearAlert, unavailable, alertBox } from '../dom.js';
import { go } from '../router.js';
import { ago, absolute, clock, mhz, number, base64ToHex } from '../format.js';
import { timeChart } from '../chart.js';
import { openStream } from '../sse.js';

const MAX_FRAMES = 200;
const COUNTS_REFRESH_MS = 30000;
const COUNTS_AFTER_FRAME_MS = 2000;

function location(g) {
  const l = g.location;
  return l ? `${number(l.latitude, 5)}, ${number(l.longitude, 5)}` : '';
}

export async function gatewaysPage(main, _params, ctx) {
  main.append(pageHeader('Gateways', 'Semtech UDP packet forwarders sending to this server', h('a', { href: '#/gateways/new', class: 'button primary' }, 'Add gateway')));
  const body = h('div');
  main.append(body);
  const list = await get('/gateways?limit=1000', { signal: ctx.signal });
  if (!ctx.active) return;
  if (!list.result.length) {
    body.append(h('div', { class: 'card empty' }, h('p', null, 'No gateways yet.'), h('p', { class: 'muted' }, 'Register a gateway by its EUI, then point its packet forwarder at this server (UDP port 1700 by default).')));
  }
  body.append(
    table(
      { id: 'gateways', class: 'data' },
      ['Gateway ID', 'Name', 'State', 'Last seen', 'Location', 'Region'],
      list.result.map((g) =>
        h(
          'tr',
          { 'data-id': g.gatewayId },
          h('td', { 'data-label': 'Gateway ID' }, h('a', { href: '#/gateways/' + g.gatewayId, class: 'mono' }, g.gatewayId)),
          h('td', { 'data-label': 'Name' }, g.name),
          h('td', { 'data-label': 'State' }, pill(g.state)),
          h('td', { 'data-label': 'Last seen' }, h('time', { datetime: g.lastSeenAt || '', title: absolute(g.lastSeenAt) }, ago(g.lastSeenAt))),
          h('td', { 'data-label': 'Location' }, location(g)),
          h('td', { 'data-label': 'Region' }, g.regionConfigId),
        ),
      ),
    ),
  );
  if (list.totalCount > list.result.length) body.append(h('p', { class: 'muted' }, `Showing ${list.result.length} of ${list.totalCount}.`));
}

export async function gatewayFormPage(main, params, ctx) {
  const editing = Boolean(params.id);
  const [gw, regions] = await Promise.all([
    editing ? get('/gateways/' + enc(params.id), { signal: ctx.signal }) : null,
    get('/regions', { signal: ctx.signal }).catch(() => null),
  ]);
  if (!ctx.active) return;
  const g = gw || { gatewayId: '', name: '', description: '', location: null, allowedNetworks: [] };
  const regionOptions = regions?.result?.map((r) => [r.id, r.id === r.commonName ? r.id : `${r.id} (${r.commonName})`]) || [];
  const form = h('form', { 'data-form': 'gateway', class: 'card form', novalidate: true });
  const input = (name, value, attrs) => h('input', Object.assign({ name, value: value ?? '' }, attrs));
  add(
    form,
    field('Gateway ID (EUI)', input('gatewayId', g.gatewayId, { required: true, pattern: '[0-9a-fA-F]{16}', maxlength: 16, readonly: editing, class: 'mono', autocomplete: 'off', spellcheck: 'false' }), '16 hex characters, as configured in the packet forwarder.'),
    field('Name', input('name', g.name, { required: true, maxlength: 100 })),
    field('Description', h('textarea', { name: 'description', rows: 2 }, g.description || '')),
    h(
      'fieldset',
      { class: 'inline-fields' },
      h('legend', null, 'Location (optional)'),
      field('Latitude', input('latitude', g.location?.latitude, { type: 'number', step: 'any', min: -90, max: 90 })),
      field('Longitude', input('longitude', g.location?.longitude, { type: 'number', step: 'any', min: -180, max: 180 })),
      field('Altitude (m)', input('altitude', g.location?.altitude, { type: 'number', step: 'any' })),
    ),
    regionOptions.length > 1 ? field('Region configuration', select('regionConfigId', regionOptions, g.regionConfigId)) : null,
    field('Allowed networks', h('textarea', { name: 'allowedNetworks', rows: 2, class: 'mono', spellcheck: 'false' }, (g.allowedNetworks || []).join('\n')), 'CIDR networks its UDP datagrams may come from, one per line; empty = anywhere.'),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create gateway'), h('a', { href: editing ? '#/gateways/' + g.gatewayId : '#/gateways', class: 'button' }, 'Cancel')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const f = form.elements;
    const body = {
      gatewayId: f.gatewayId.value.trim(),
      name: f.name.value,
      description: f.description.value,
      allowedNetworks: f.allowedNetworks.value.split(/[\s,]+/).filter(Boolean),
    };
    if (f.regionConfigId) body.regionConfigId = f.regionConfigId.value;
    const lat = f.latitude.value.trim();
    const lon = f.longitude.value.trim();
    if (lat || lon) {
      body.location = { latitude: Number(lat), longitude: Number(lon), altitude: Number(f.altitude.value || 0) };
    }
    try {
      const saved = editing ? await put('/gateways/' + enc(g.gatewayId), body) : await post('/gateways', body);
      go('/gateways/' + saved.gatewayId);
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  main.append(pageHeader(editing ? 'Edit gateway' : 'Add gateway', editing ? g.gatewayId : null), form);
  form.elements[editing ? 'name' : 'gatewayId'].focus();
}

export async function gatewayPage(main, params, ctx) {
  const id = params.id;
  const g = await get('/gateways/' + enc(id), { signal: ctx.signal });
  if (!ctx.active) return;
  const remove = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
  remove.addEventListener('click', async () => {
    if (!confirm(`Delete gateway ${g.name} (${g.gatewayId})?`)) return;
    try {
      await del('/gateways/' + enc(id));
      go('/gateways');
    } catch (e) {
      showAlert(main, e.message);
    }
  });
  main.append(pageHeader(g.name, g.gatewayId, h('a', { href: `#/gateways/${enc(id)}/edit`, class: 'button' }, 'Edit'), remove));

  const state = h(
    'div',
    { id: 'gateway-state' },
    facts([
      ['State', pill(g.state)],
      ['Last seen', h('time', { datetime: g.lastSeenAt || '', title: absolute(g.lastSeenAt) }, ago(g.lastSeenAt))],
      ['Location', location(g)],
      ['Region', g.regionConfigId],
      ['Allowed networks', (g.allowedNetworks || []).join(', ') || 'anywhere'],
      ['Description', g.description],
    ]),
  );
  const counts = h('div', { id: 'gateway-counts' }, h('p', { class: 'muted' }, 'Loading…'));
  const status = h('span', { id: 'gateway-stream-status', class: 'stream-status' }, 'connecting');
  const frames = h('ol', { id: 'gateway-frames', class: 'feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const emptyNote = h('p', { class: 'muted feed-empty' }, 'Waiting for frames… Every uplink this gateway forwards appears here, also those the server rejected.');
  main.append(
    h('div', { class: 'grid-2' }, section('State', null, state), section('Traffic, last hour', null, counts)),
    section('Live frames', { class: 'card' }, h('div', { class: 'feed-head' }, status), emptyNote, frames),
  );

  const loadCounts = async () => {
    try {
      const st = await get(`/gateways/${enc(id)}/stats`, { signal: ctx.signal });
      if (!ctx.active) return;
      const t = st.totals || {};
      const step = (st.bucketSeconds || 60) * 1000;
      const from = Date.parse(st.from);
      const at = (v, i) => [from + i * step, v];
      const chart = h('div', { class: 'chart-box' });
      replace(
        counts,
        h('div', { class: 'stat-row' }, statBox('uplinks', t.uplinks ?? 0, 'stat-online'), statBox('rejected', t.rejected ?? 0, 'stat-offline'), statBox('downlinks', t.downlinks ?? 0, 'stat-never')),
        chart,
      );
      timeChart(chart, {
        series: [
          { name: 'Uplinks', cls: 's1', points: st.uplinks.map(at) },
          { name: 'Rejected', cls: 's3', points: st.rejected.map(at) },
          { name: 'Downlinks', cls: 's2', points: st.downlinks.map(at) },
        ],
        from,
        to: Date.parse(st.to),
        zero: true,
        height: 180,
        label: 'Uplinks, rejected uplinks and downlinks per minute',
        signal: ctx.signal,
      });
    } catch (e) {
      if (!ctx.active) return;
      replace(counts, e.unavailable ? unavailable('Gateway statistics are not available on this server.') : alertBox(e.message));
    }
  };
  ctx.every(COUNTS_REFRESH_MS, loadCounts);
  loadCounts();
  // A frame in the feed means the counts moved: read them again, at most once per
  // COUNTS_AFTER_FRAME_MS however busy the gateway is.
  let countsDue = null;
  const countsAfterFrame = () => {
    if (countsDue !== null) return;
    countsDue = setTimeout(() => {
      countsDue = null;
      if (ctx.active) loadCounts();
    }, COUNTS_AFTER_FRAME_MS);
  };

  openStream(
    `/gateways/${enc(id)}/frames/stream`,
    {
      onStatus: (s, detail) => setStatus(status, s, detail),
      onEvent: (kind, data) => {
        if (kind === 'lagged') {
          status.textContent = `live · missed ${data?.missed ?? '?'} frames`;
          return;
        }
        if (kind !== 'up' && kind !== 'down') return;
        emptyNote.remove();
        frames.prepend(frameItem(kind, data));
        countsAfterFrame();
        while (frames.childElementCount > MAX_FRAMES) frames.lastElementChild.remove();
      },
    },
    ctx.signal,
  );
}

function statBox(label, value, cls) {
  return h('div', { class: ['stat', cls] }, h('span', { class: 'stat-value' }, String(value)), h('span', { class: 'stat-label' }, label));
}

export function setStatus(el, state, detail) {
  el.dataset.state = state;
  el.textContent = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: `reconnecting in ${detail} s`,
    unavailable: 'live feed not available',
    unauthorized: 'signed out',
  }[state] || state;
}

function frameItem(direction, f) {
  const accepted = direction === 'up' ? f.accepted !== false : !f.txAck || f.txAck === 'OK';
  const reason = direction === 'up' ? f.reason : f.txAck && f.txAck !== 'OK' ? f.txAck : null;
  const mod = f.modulation ? `SF${f.modulation.spreadingFactor} BW${Math.round((f.modulation.bandwidth || 0) / 1000)}` : f.dr !== null && f.dr !== undefined ? 'DR' + f.dr : '';
  const who = f.devEui ? h('a', { href: '#/devices/' + f.devEui, class: 'mono' }, f.devEui) : f.devAddr ? h('span', { class: 'mono' }, f.devAddr) : null;
  const fcnt = direction === 'up' ? f.fCnt : f.fCntDown;
  const bytes = base64ToHex(f.phyPayload);
  return h(
    'li',
    { 'data-frame': '', 'data-direction': direction, 'data-accepted': String(accepted), class: ['frame', accepted ? 'frame-ok' : 'frame-bad'] },
    h('span', { class: ['dir', 'dir-' + direction], title: direction === 'up' ? 'uplink' : 'downlink' }, direction === 'up' ? '↑ up' : '↓ down'),
    h('time', { datetime: f.time || '', title: absolute(f.time) }, clock(f.time || new Date())),
    h('span', { class: 'mtype' }, f.mType || 'unknown'),
    who,
    fcnt !== null && fcnt !== undefined ? h('span', null, 'FCnt ' + fcnt) : null,
    direction === 'up' && f.fPort !== null && f.fPort !== undefined ? h('span', null, 'FPort ' + f.fPort) : null,
    h('span', null, mhz(f.frequency)),
    mod ? h('span', null, mod) : null,
    direction === 'up' ? h('span', null, `RSSI ${f.rssi} · SNR ${number(f.snr, 1)}`) : null,
    direction === 'down' ? h('span', null, 'TX_ACK ' + (f.txAck || 'pending')) : null,
    accepted ? h('span', { class: 'verdict ok' }, direction === 'up' ? 'accepted' : 'sent') : h('span', { class: 'verdict bad' }, direction === 'up' ? 'rejected: ' : 'not sent: ', h('span', { class: 'reason' }, reason || 'unknown')),
    bytes ? h('code', { class: 'phy', title: 'PHYPayload (hex)' }, bytes) : null,
  );
}

// The device page: state, keys or activation, the live event stream, uplink history, the
// measurement chart and the downlink queue.

import { get, getIfExists, post, put, del, enc, query } from '../api.js';
import { h, replace, pageHeader, section, field, select, checkbox, facts, showAlert, clearAlert, unavailable, alertBox } from '../dom.js';
import { go } from '../router.js';
import { ago, absolute, clock, json, base64ToHex, hexToBytes, bytesToBase64, number, mhz } from '../format.js';
import { timeChart } from '../chart.js';
import { openStream } from '../sse.js';
import { setStatus } from './gateways.js';

const MAX_EVENTS = 100;
const UPLINKS_PER_PAGE = 10;
const RANGES = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };
/** The bucket a range starts with: raw points for an hour, then fewer, wider buckets. */
const DEFAULT_BUCKET = { '1h': '', '24h': '15m', '7d': '1h' };
const BUCKETS = [['', 'raw values'], ['1m', '1 min'], ['5m', '5 min'], ['15m', '15 min'], ['1h', '1 hour'], ['6h', '6 hours'], ['1d', '1 day']];
const AGGS = ['avg', 'min', 'max', 'sum', 'count', 'last'];

/** Runs `fn` once, `ms` after the last call. */
function debounce(ms, fn) {
  let t = null;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

export async function devicePage(main, params, ctx) {
  const devEui = params.devEui;
  const device = await get('/devices/' + enc(devEui), { signal: ctx.signal });
  const [app, profile] = await Promise.all([
    get('/applications/' + enc(device.applicationId), { signal: ctx.signal }).catch(() => null),
    get('/device-profiles/' + enc(device.deviceProfileId), { signal: ctx.signal }).catch(() => null),
  ]);
  if (!ctx.active) return;

  const remove = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
  remove.addEventListener('click', async () => {
    if (!confirm(`Delete device ${device.name} (${device.devEui})?`)) return;
    try {
      await del('/devices/' + enc(devEui));
      go('/applications/' + device.applicationId);
    } catch (e) {
      showAlert(main, e.message);
    }
  });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/applications' }, 'Applications'), ' / ', h('a', { href: '#/applications/' + device.applicationId }, app?.name || 'application')),
    pageHeader(device.name, device.devEui, h('a', { href: `#/devices/${enc(devEui)}/edit`, class: 'button' }, 'Edit'), remove),
  );

  const stateBox = h('div', { id: 'device-state' });
  const keysBox = h('div', { id: 'device-keys' });
  const status = h('span', { id: 'device-stream-status', class: 'stream-status', role: 'status' }, 'connecting');
  const events = h('ol', { id: 'device-events', class: 'feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const eventsEmpty = h('p', { class: 'muted feed-empty' }, 'Waiting for events… Joins, uplinks (with the decoded object), acks, TX acks, status and log events appear here as they happen.');
  const chartBox = h('div', { id: 'device-chart' });
  const uplinksBox = h('div');
  const queueBox = h('div');

  main.append(
    h('div', { class: 'grid-2' }, section('State', null, stateBox), section(profile?.supportsOtaa === false ? 'Activation (ABP)' : 'Keys (OTAA)', null, keysBox)),
    section('Live events', null, h('div', { class: 'feed-head' }, status), eventsEmpty, events),
    section('Measurements', null, chartBox),
    section('Uplink history', null, uplinksBox),
    section('Downlink queue', null, queueBox),
  );

  const refreshState = () => renderState(stateBox, devEui, ctx);
  refreshState();
  renderKeys(keysBox, device, profile, ctx, refreshState);
  const uplinks = uplinkHistory(uplinksBox, devEui, ctx);
  const chart = measurementChart(chartBox, devEui, ctx);
  const queue = downlinkQueue(queueBox, devEui, ctx);

  const onUp = debounce(700, () => {
    uplinks.refreshIfFirst();
    chart.refresh();
    refreshState();
  });
  const onQueueChange = debounce(300, () => queue.refresh());
  openStream(
    `/devices/${enc(devEui)}/events/stream`,
    {
      onStatus: (s, detail) => setStatus(status, s, detail),
      onEvent: (kind, data) => {
        if (kind === 'ready') return;
        if (kind === 'lagged') {
          const missed = data?.missed ?? '?';
          status.textContent = `live · missed ${missed} events`;
          events.prepend(h('li', { class: 'feed-note' }, `Missed ${missed} events: this browser was too slow to keep up.`));
          return;
        }
        eventsEmpty.remove();
        events.prepend(eventItem(kind, data));
        while (events.childElementCount > MAX_EVENTS) events.lastElementChild.remove();
        if (kind === 'up' || kind === 'join') onUp();
        if (kind === 'txack' || kind === 'ack' || kind === 'up') onQueueChange();
      },
    },
    ctx.signal,
  );
}

async function renderState(box, devEui, ctx) {
  let device;
  try {
    device = await get('/devices/' + enc(devEui), { signal: ctx.signal });
  } catch (e) {
    if (ctx.active) replace(box, alertBox(e.message));
    return;
  }
  let st = device.state;
  if (!st) {
    // Servers without the `state` field: the session tells the same.
    try {
      const a = await get(`/devices/${enc(devEui)}/activation`, { signal: ctx.signal });
      st = { joined: true, devAddr: a.devAddr, fCntUp: a.fCntUp, fCntDown: a.fCntDown, dr: a.radio?.dr, txPowerIndex: a.radio?.txPowerIndex, nbTrans: a.radio?.nbTrans, adr: null };
    } catch {
      st = { joined: false };
    }
    st.lastSeenAt = device.lastSeenAt;
  }
  if (!ctx.active) return;
  const opt = (v) => (v === null || v === undefined ? null : String(v));
  replace(
    box,
    facts([
      ['Activated', h('span', { class: ['pill', st.joined ? 'pill-online' : 'pill-neverseen'] }, st.joined ? 'ACTIVE' : 'NOT JOINED')],
      ['Last seen', h('time', { datetime: st.lastSeenAt || '', title: absolute(st.lastSeenAt) }, ago(st.lastSeenAt))],
      ['DevAddr', st.devAddr ? h('span', { class: 'mono' }, st.devAddr) : null],
      ['FCnt up / down', st.joined ? `${opt(st.fCntUp) ?? '—'} / ${opt(st.fCntDown) ?? '—'}` : null],
      ['Data rate', opt(st.dr) !== null ? 'DR' + st.dr : null],
      ['TX power index', opt(st.txPowerIndex)],
      ['Transmissions', opt(st.nbTrans)],
      ['ADR', st.adr === null || st.adr === undefined ? null : st.adr ? 'on' : 'off'],
      ['Description', device.description],
    ]),
  );
}

function hexInput(name, length, value) {
  return h('input', { name, value: value ?? '', maxlength: length, pattern: `[0-9a-fA-F]{${length}}`, class: 'mono', autocomplete: 'off', spellcheck: 'false', required: true });
}

function secret(value) {
  const text = h('span', { class: 'mono secret' }, '•'.repeat(16));
  const toggle = h('button', { type: 'button', class: 'small', 'aria-pressed': 'false' }, 'Show');
  toggle.addEventListener('click', () => {
    const shown = toggle.getAttribute('aria-pressed') === 'true';
    text.textContent = shown ? '•'.repeat(16) : value;
    toggle.textContent = shown ? 'Show' : 'Hide';
    toggle.setAttribute('aria-pressed', String(!shown));
  });
  return h('span', { class: 'secret-row' }, text, toggle);
}

async function renderKeys(box, device, profile, ctx, onChange) {
  const devEui = device.devEui;
  if (profile?.supportsOtaa === false) return renderActivation(box, devEui, ctx, onChange);
  let keys;
  try {
    keys = await getIfExists(`/devices/${enc(devEui)}/keys`, { signal: ctx.signal });
  } catch (e) {
    if (ctx.active) replace(box, alertBox(e.message));
    return;
  }
  if (!ctx.active) return;
  const form = h(
    'form',
    { 'data-form': 'keys', class: 'inline-form', novalidate: true },
    field(keys ? 'New AppKey' : 'AppKey', hexInput('appKey', 32)),
    h('button', { type: 'submit' }, keys ? 'Replace key' : 'Set key'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    try {
      await put(`/devices/${enc(devEui)}/keys`, { appKey: form.elements.appKey.value.trim() });
      renderKeys(box, device, profile, ctx, onChange);
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  const nonces = h('button', { type: 'button', class: 'small' }, 'Forget used DevNonces');
  nonces.addEventListener('click', async () => {
    try {
      await del(`/devices/${enc(devEui)}/dev-nonces`);
      nonces.textContent = 'DevNonces forgotten';
      nonces.disabled = true;
    } catch (e) {
      showAlert(box, e.message);
    }
  });
  replace(
    box,
    facts([
      ['JoinEUI', h('span', { class: 'mono' }, device.joinEui)],
      ['AppKey', keys ? secret(keys.appKey) : h('span', { class: 'warn' }, 'not set: the device cannot join')],
      keys?.nwkKey ? ['NwkKey', secret(keys.nwkKey)] : null,
    ]),
    form,
    h('p', { class: 'hint' }, 'A device that was reset starts its DevNonce again; ', nonces),
  );
}

async function renderActivation(box, devEui, ctx, onChange) {
  let session;
  try {
    session = await getIfExists(`/devices/${enc(devEui)}/activation`, { signal: ctx.signal });
  } catch (e) {
    if (ctx.active) replace(box, alertBox(e.message));
    return;
  }
  if (!ctx.active) return;
  const form = h(
    'form',
    { 'data-form': 'activation', class: 'form compact', novalidate: true },
    field('DevAddr', hexInput('devAddr', 8, session?.devAddr)),
    field('NwkSKey', hexInput('nwkSKey', 32)),
    field('AppSKey', hexInput('appSKey', 32)),
    h(
      'div',
      { class: 'inline-fields' },
      field('FCnt up', h('input', { name: 'fCntUp', type: 'number', min: 0, value: 0 })),
      field('FCnt down', h('input', { name: 'fCntDown', type: 'number', min: 0, value: 0 })),
    ),
    h('button', { type: 'submit' }, session ? 'Activate again' : 'Activate'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const f = form.elements;
    try {
      await post(`/devices/${enc(devEui)}/activate`, {
        devAddr: f.devAddr.value.trim(),
        nwkSKey: f.nwkSKey.value.trim(),
        appSKey: f.appSKey.value.trim(),
        fCntUp: Number(f.fCntUp.value || 0),
        fCntDown: Number(f.fCntDown.value || 0),
      });
      renderActivation(box, devEui, ctx, onChange);
      onChange();
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  replace(
    box,
    session
      ? facts([
          ['DevAddr', h('span', { class: 'mono' }, session.devAddr)],
          ['NwkSKey', secret(session.nwkSKey)],
          ['AppSKey', secret(session.appSKey)],
          ['FCnt up / down', `${session.fCntUp} / ${session.fCntDown}`],
        ])
      : h('p', { class: 'warn' }, 'Not activated: set the session below.'),
    h('details', { open: !session }, h('summary', null, session ? 'Activate with new session keys' : 'Session'), form),
  );
}

/** The part of an event worth reading at a glance, as JSON. */
function eventSummary(kind, ev) {
  switch (kind) {
    case 'up':
      return ev.object !== undefined ? ev.object : { data: ev.data, note: 'no codec ran' };
    case 'join':
      return { devAddr: ev.devAddr };
    case 'ack':
      return { acknowledged: ev.acknowledged, fCntDown: ev.fCntDown, queueItemId: ev.queueItemId };
    case 'txack':
      return { fCntDown: ev.fCntDown, gatewayId: ev.gatewayId, queueItemId: ev.queueItemId };
    case 'status':
      return { margin: ev.margin, batteryLevel: ev.batteryLevelUnavailable ? null : ev.batteryLevel, externalPowerSource: ev.externalPowerSource };
    case 'log':
      return { level: ev.level, code: ev.code, description: ev.description };
    default: {
      if (!ev || typeof ev !== 'object') return ev;
      const { deviceInfo, ...rest } = ev;
      return rest;
    }
  }
}

function eventItem(kind, ev) {
  const bits = [];
  if (kind === 'up') {
    bits.push(`FCnt ${ev.fCnt}`, `FPort ${ev.fPort ?? '—'}`, `DR${ev.dr ?? '?'}`);
    const rx = ev.rxInfo?.[0];
    if (rx) bits.push(`RSSI ${rx.rssi} · SNR ${number(rx.snr, 1)}`);
  }
  if (kind === 'log' && ev.level) bits.push(ev.level);
  return h(
    'li',
    { 'data-event': kind, class: ['event', 'event-' + kind, kind === 'log' && ev.level === 'ERROR' ? 'event-error' : null] },
    h(
      'div',
      { class: 'event-head' },
      h('span', { class: 'kind' }, kind),
      h('time', { datetime: ev?.time || '', title: absolute(ev?.time) }, clock(ev?.time || new Date())),
      bits.map((b) => h('span', { class: 'event-bit' }, b)),
    ),
    h('pre', { class: 'event-summary' }, json(eventSummary(kind, ev))),
    h('details', { class: 'event-full' }, h('summary', null, 'Full event JSON'), h('pre', null, json(ev))),
  );
}

function uplinkHistory(box, devEui, ctx) {
  const cursors = [null];
  const older = h('button', { type: 'button', 'data-action': 'older' }, 'Older →');
  const newer = h('button', { type: 'button', 'data-action': 'newer' }, '← Newer');
  const info = h('span', { class: 'muted' });
  const body = h('tbody');
  const tbl = h(
    'div',
    { class: 'table-wrap' },
    h('table', { id: 'device-uplinks', class: 'data' }, h('thead', null, h('tr', null, ['Time', 'FCnt', 'FPort', 'DR', 'RSSI / SNR', 'Gateways', 'Data (hex)', 'Decoded'].map((c) => h('th', { scope: 'col' }, c)))), body),
  );
  let next = null;
  const load = async () => {
    const cursor = cursors[cursors.length - 1];
    try {
      const page = await get(`/devices/${enc(devEui)}/uplinks` + query({ limit: UPLINKS_PER_PAGE, cursor }), { signal: ctx.signal });
      if (!ctx.active) return;
      clearAlert(box);
      next = page.nextCursor;
      replace(
        body,
        page.result.length
          ? page.result.map((u) =>
              h(
                'tr',
                null,
                h('td', { 'data-label': 'Time' }, h('time', { datetime: u.time, title: absolute(u.time) }, absolute(u.time))),
                h('td', { 'data-label': 'FCnt' }, String(u.fCnt)),
                h('td', { 'data-label': 'FPort' }, u.fPort ?? '—'),
                h('td', { 'data-label': 'DR' }, 'DR' + u.dr),
                h('td', { 'data-label': 'RSSI / SNR' }, `${u.rssi} / ${number(u.snr, 1)}`),
                h('td', { 'data-label': 'Gateways' }, String(u.gatewayCount), ' ', h('span', { class: 'muted small' }, mhz(u.frequency))),
                h('td', { 'data-label': 'Data (hex)', class: 'mono small wrap' }, base64ToHex(u.data)),
                h('td', { 'data-label': 'Decoded', class: 'mono small wrap' }, u.object !== undefined ? JSON.stringify(u.object) : ''),
              ),
            )
          : h('tr', null, h('td', { colspan: 8, class: 'muted' }, cursors.length > 1 ? 'No older uplinks.' : 'No uplinks stored yet.')),
      );
      const first = (cursors.length - 1) * UPLINKS_PER_PAGE + 1;
      info.textContent = page.result.length ? `${first}–${first + page.result.length - 1} of ${page.totalCount}` : `${page.totalCount} uplinks`;
      older.disabled = !next;
      newer.disabled = cursors.length === 1;
    } catch (e) {
      if (ctx.active) showAlert(box, e.message);
    }
  };
  older.addEventListener('click', () => {
    if (!next) return;
    cursors.push(next);
    load();
  });
  newer.addEventListener('click', () => {
    if (cursors.length > 1) cursors.pop();
    load();
  });
  older.disabled = newer.disabled = true;
  box.append(tbl, h('div', { class: 'pager' }, newer, info, older));
  load();
  return {
    refreshIfFirst() {
      if (cursors.length === 1) load();
    },
  };
}

function measurementChart(box, devEui, ctx) {
  const seriesSelect = h('select', { name: 'series' });
  const rangeSelect = select('range', [['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days']], '1h');
  const bucketSelect = select('bucket', BUCKETS, '');
  const aggSelect = select('agg', AGGS, 'avg');
  const plot = h('div', { class: 'chart-box' }, h('p', { class: 'muted' }, 'Loading…'));
  const note = h('p', { class: 'muted hint' });
  const controls = h('div', { class: 'chart-controls' }, field('Series', seriesSelect), field('Range', rangeSelect), field('Bucket', bucketSelect), field('Aggregate', aggSelect));
  box.append(controls, plot, note);
  let known = [];

  const syncAgg = () => (aggSelect.disabled = !bucketSelect.value);
  const loadSeries = async () => {
    try {
      const list = await get(`/devices/${enc(devEui)}/measurements`, { signal: ctx.signal });
      if (!ctx.active) return false;
      const numeric = list.result.filter((m) => m.kind !== 'STRING' && typeof m.value === 'number');
      const names = numeric.map((m) => m.name);
      if (names.join('\n') !== known.join('\n')) {
        const keep = seriesSelect.value;
        known = names;
        replace(seriesSelect, names.map((n) => h('option', { value: n, selected: n === keep }, n)));
      }
      return true;
    } catch (e) {
      if (ctx.active) replace(plot, e.unavailable && e.status === 403 ? unavailable('Measurements are not available to this key.') : alertBox(e.message));
      return false;
    }
  };
  const draw = async () => {
    if (!known.length) {
      replace(plot, h('p', { class: 'muted' }, 'No numeric measurements yet. They appear when uplinks are decoded by the profile’s codec.'));
      note.textContent = '';
      return;
    }
    const name = seriesSelect.value || known[0];
    const range = RANGES[rangeSelect.value];
    const from = new Date(Date.now() - range);
    const bucket = bucketSelect.value;
    try {
      const res = await get(
        `/devices/${enc(devEui)}/measurements/${enc(name)}` + query({ from: from.toISOString(), bucket, agg: bucket ? aggSelect.value : '', limit: bucket ? '' : 10000 }),
        { signal: ctx.signal },
      );
      if (!ctx.active) return;
      const points = res.result.filter((p) => typeof p.value === 'number').map((p) => [Date.parse(p.time), p.value]);
      const now = Date.now();
      // A series younger than a quarter of the range is drawn over its own span (at least
      // 10 minutes): an hour-wide axis would squeeze a new device's points into one corner.
      let start = from.getTime();
      const first = points.length ? Math.min(...points.map((p) => p[0])) : start;
      if (now - first < range / 4) start = Math.max(start, Math.min(now - 10 * 60e3, first - (now - first) * 0.05));
      timeChart(plot, {
        series: [{ name, cls: 's1', points }],
        from: start,
        to: now,
        label: `${name}, ${rangeSelect.selectedOptions[0].textContent.toLowerCase()}`,
        empty: `No values of ${name} in this range`,
        signal: ctx.signal,
      });
      note.textContent = `${points.length} ${bucket ? `buckets of ${bucket} (${aggSelect.value})` : 'values'}.`;
    } catch (e) {
      if (ctx.active) replace(plot, alertBox(e.message));
    }
  };
  const refresh = async () => {
    if (await loadSeries()) await draw();
  };
  seriesSelect.addEventListener('change', draw);
  rangeSelect.addEventListener('change', () => {
    bucketSelect.value = DEFAULT_BUCKET[rangeSelect.value];
    syncAgg();
    draw();
  });
  bucketSelect.addEventListener('change', () => {
    syncAgg();
    draw();
  });
  aggSelect.addEventListener('change', draw);
  syncAgg();
  refresh();
  return { refresh };
}

function downlinkQueue(box, devEui, ctx) {
  const list = h('ul', { id: 'device-queue', class: 'queue' });
  const flush = h('button', { type: 'button', 'data-action': 'flush', class: 'danger-outline' }, 'Flush queue');
  const format = select('format', [['hex', 'Hex'], ['base64', 'Base64'], ['json', 'JSON object (encoded by the codec)']], 'hex');
  const payload = h('textarea', { name: 'payload', rows: 3, class: 'mono', spellcheck: 'false', placeholder: '01020304' });
  const placeholders = { hex: '01020304', base64: 'AQIDBA==', json: '{"digitalOutput": {"1": 1}}' };
  format.addEventListener('change', () => (payload.placeholder = placeholders[format.value]));
  const form = h(
    'form',
    { 'data-form': 'downlink', class: 'form compact', novalidate: true },
    h(
      'div',
      { class: 'inline-fields' },
      field('FPort', h('input', { name: 'fPort', type: 'number', min: 1, max: 223, value: 10, required: true })),
      field('Format', format),
    ),
    field('Payload', payload),
    checkbox('Confirmed (the device acknowledges it)', 'confirmed', false),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Enqueue'), flush),
  );
  const refresh = async () => {
    try {
      const q = await get(`/devices/${enc(devEui)}/queue`, { signal: ctx.signal });
      if (!ctx.active) return;
      replace(
        list,
        q.result.length
          ? q.result.map((item) =>
              h(
                'li',
                { 'data-queue-item': item.id, class: item.isPending ? 'pending' : null },
                h('span', { class: 'mono' }, base64ToHex(item.data) || '(empty)'),
                h('span', null, 'FPort ' + item.fPort),
                item.confirmed ? h('span', { class: 'tag' }, 'confirmed') : null,
                item.fCntDown !== null && item.fCntDown !== undefined ? h('span', null, 'FCnt ' + item.fCntDown) : null,
                h('span', { class: ['tag', item.isPending ? 'tag-warn' : null] }, item.isPending ? 'sent, awaiting ack' : 'queued'),
              ),
            )
          : h('li', { class: 'muted empty' }, 'The queue is empty. A Class A device receives a queued downlink after its next uplink.'),
      );
    } catch (e) {
      if (ctx.active) showAlert(box, e.message);
    }
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const f = form.elements;
    const body = { fPort: Number(f.fPort.value), confirmed: f.confirmed.checked };
    try {
      const text = payload.value.trim();
      if (format.value === 'json') {
        let object;
        try {
          object = JSON.parse(text);
        } catch (e) {
          throw new Error('payload: not valid JSON (' + e.message + ')');
        }
        if (!object || typeof object !== 'object' || Array.isArray(object)) throw new Error('payload: expected a JSON object');
        body.object = object;
      } else if (format.value === 'hex') {
        try {
          body.data = bytesToBase64(hexToBytes(text));
        } catch {
          throw new Error('payload: expected pairs of hex digits');
        }
      } else {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text.replace(/\s+/g, ''))) throw new Error('payload: not base64');
        body.data = text.replace(/\s+/g, '');
      }
      await post(`/devices/${enc(devEui)}/queue`, body);
      payload.value = '';
      refresh();
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  flush.addEventListener('click', async () => {
    clearAlert(form);
    try {
      await del(`/devices/${enc(devEui)}/queue`);
      refresh();
    } catch (e) {
      showAlert(form, e.message);
    }
  });
  box.append(list, form);
  refresh();
  return { refresh };
}

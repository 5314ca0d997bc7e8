// Overview: gateways online/offline, uplinks and joins per minute over the last hour, and the
// latest log events with errors first.

import { get } from '../api.js';
import { h, replace, section, unavailable, alertBox } from '../dom.js';
import { timeChart } from '../chart.js';
import { ago, absolute } from '../format.js';

const REFRESH_MS = 15000;
const LEVEL_ORDER = { ERROR: 0, WARNING: 1, INFO: 2 };

export async function overviewPage(main, _params, ctx) {
  const gateways = h('div', { id: 'overview-gateways', class: 'stat-row', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
  const traffic = h('div', { id: 'overview-traffic', class: 'chart-box' });
  const logs = h('div', { id: 'overview-logs' });
  main.append(
    h('div', { class: 'page-header' }, h('div', null, h('h1', null, 'Overview'), h('p', { class: 'muted subtitle' }, 'The network right now'))),
    section('Gateways', null, gateways),
    section('Traffic, last hour', null, h('p', { class: 'muted hint' }, 'Accepted uplinks and joins per minute.'), traffic),
    section('Latest log events', null, logs),
  );
  const refresh = () => Promise.all([loadStats(gateways, traffic, ctx), loadLogs(logs, ctx)]);
  ctx.every(REFRESH_MS, refresh);
  await refresh();
}

function stat(label, value, cls) {
  return h('div', { class: ['stat', cls] }, h('span', { class: 'stat-value' }, String(value)), h('span', { class: 'stat-label' }, label));
}

async function loadStats(gatewaysBox, trafficBox, ctx) {
  let stats = null;
  try {
    stats = await get('/stats', { signal: ctx.signal });
  } catch (e) {
    if (!ctx.active) return;
    if (!e.unavailable) trafficBox.replaceChildren(alertBox(e.message));
  }
  if (!ctx.active) return;
  let counts = stats?.gateways;
  if (!counts) {
    // Without /api/stats the list has every gateway's state.
    try {
      const list = await get('/gateways?limit=1000', { signal: ctx.signal });
      counts = { online: 0, offline: 0, neverSeen: 0 };
      for (const g of list.result) {
        if (g.state === 'ONLINE') counts.online++;
        else if (g.state === 'OFFLINE') counts.offline++;
        else counts.neverSeen++;
      }
    } catch (e) {
      if (!ctx.active) return;
      replace(gatewaysBox, e.unavailable ? unavailable('Gateway states need an admin key.') : alertBox(e.message));
    }
  }
  if (!ctx.active) return;
  if (counts) {
    replace(
      gatewaysBox,
      stat('online', counts.online, 'stat-online'),
      stat('offline', counts.offline, 'stat-offline'),
      stat('never seen', counts.neverSeen ?? 0, 'stat-never'),
      h('a', { href: '#/gateways', class: 'stat-link' }, 'All gateways →'),
    );
  }
  if (!stats) {
    if (!trafficBox.querySelector('.alert')) replace(trafficBox, unavailable('Traffic statistics are not available on this server.'));
    return;
  }
  const step = (stats.bucketSeconds || 60) * 1000;
  const to = Date.parse(stats.to);
  const from = Date.parse(stats.from);
  const at = (i) => from + i * step;
  const series = [
    { name: 'Uplinks', cls: 's1', points: stats.uplinks.map((v, i) => [at(i), v]) },
    { name: 'Joins', cls: 's2', points: stats.joins.map((v, i) => [at(i), v]) },
  ];
  const total = (a) => a.reduce((x, y) => x + y, 0);
  timeChart(trafficBox, { series, from, to, zero: true, label: `Uplinks (${total(stats.uplinks)}) and joins (${total(stats.joins)}) per minute, last hour`, signal: ctx.signal });
  trafficBox.append(h('p', { class: 'muted hint' }, `${total(stats.uplinks)} uplinks and ${total(stats.joins)} joins in the last hour.`));
}

async function loadLogs(box, ctx) {
  let page;
  try {
    page = await get('/events?kind=log&limit=20', { signal: ctx.signal });
  } catch (e) {
    if (!ctx.active) return;
    replace(box, e.unavailable ? unavailable('Log events across devices are not available on this server.') : alertBox(e.message));
    return;
  }
  if (!ctx.active) return;
  const rows = [...page.result].sort(
    (a, b) => (LEVEL_ORDER[level(a)] ?? 3) - (LEVEL_ORDER[level(b)] ?? 3) || Date.parse(b.time) - Date.parse(a.time),
  );
  if (!rows.length) {
    replace(box, h('p', { class: 'muted' }, 'No log events yet. Devices report codec errors, rejected downlinks and similar here.'));
    return;
  }
  replace(
    box,
    h(
      'ul',
      { class: 'log-list' },
      rows.map((ev) =>
        h(
          'li',
          { 'data-level': level(ev) },
          h('span', { class: ['level', 'level-' + level(ev).toLowerCase()] }, level(ev)),
          h('span', { class: 'log-text' }, ev.body?.description || ev.body?.code || ''),
          h('span', { class: 'log-meta' }, ev.devEui ? h('a', { href: '#/devices/' + ev.devEui, class: 'mono' }, ev.devEui) : null, ' ', h('time', { datetime: ev.time, title: absolute(ev.time) }, ago(ev.time))),
        ),
      ),
    ),
  );
}

function level(ev) {
  return String(ev.level || ev.body?.level || 'INFO').toUpperCase();
}

// A small SVG time-series chart: lines with points, y grid with "nice" ticks, time labels on
// the x axis, a native tooltip (<title>) on every point. Drawn at the container's pixel width
// (text stays readable on a phone) and redrawn when that width changes.

import { h, s } from './dom.js';

const MARGIN = { top: 12, right: 14, bottom: 26, left: 48 };
const MINUTE = 60e3;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];

const hm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayMonth = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** Round tick values covering [min, max], about `count` of them. */
export function niceTicks(min, max, count = 5) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (min === max) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / Math.max(1, count - 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((st) => st >= raw) || 10 * magnitude;
  const first = Math.floor(min / step) * step;
  const ticks = [];
  for (let v = first; v <= max + step * 0.5; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function timeTicks(from, to, maxTicks) {
  const span = to - from;
  const step = TIME_STEPS.find((st) => span / st <= maxTicks) || TIME_STEPS[TIME_STEPS.length - 1];
  // Steps of a day or more start at local midnight; shorter ones at round local minutes.
  const offset = new Date(from).getTimezoneOffset() * MINUTE;
  let t = Math.ceil((from - offset) / step) * step + offset;
  const ticks = [];
  for (; t <= to; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, step) {
  const d = new Date(t);
  if (step >= DAY || (d.getHours() === 0 && d.getMinutes() === 0 && step >= HOUR)) return dayMonth.format(d);
  return hm.format(d);
}

function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, '') + 'M';
  if (abs >= 1e4) return (v / 1e3).toFixed(1).replace(/\.0$/, '') + 'k';
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(abs < 1 ? 3 : abs < 100 ? 2 : 1).replace(/\.?0+$/, '');
}

/**
 * Draws into `container` (emptied first). options:
 *   series: [{ name, points: [[timeMs, value], …], cls: 's1'|'s2'|'s3', markers?: bool }]
 *   from, to: time range in ms (defaults: the data's)
 *   zero: include 0 on the y axis
 *   label: accessible name of the chart
 *   empty: text when there are no points
 *   signal: AbortSignal that stops the resize observer
 */
export function timeChart(container, options) {
  const draw = () => {
    const width = Math.max(280, Math.round(container.clientWidth || 640));
    container.replaceChildren(...[buildChart(width, options), legend(options.series)].filter(Boolean));
  };
  draw();
  if (typeof ResizeObserver === 'function') {
    let lastWidth = container.clientWidth;
    const observer = new ResizeObserver(() => {
      if (Math.abs(container.clientWidth - lastWidth) < 8) return;
      lastWidth = container.clientWidth;
      draw();
    });
    observer.observe(container);
    options.signal?.addEventListener('abort', () => observer.disconnect());
  }
}

function legend(series) {
  if (series.length < 2) return null;
  return h(
    'ul',
    { class: 'chart-legend' },
    series.map((se) => h('li', null, h('span', { class: ['swatch', se.cls], 'aria-hidden': 'true' }), se.name)),
  );
}

function buildChart(width, { series, from, to, zero = false, label = 'chart', empty = 'No data in this range', height = 220 }) {
  const all = series.flatMap((se) => se.points.filter((p) => Number.isFinite(p[1])));
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': label,
  });
  const times = all.map((p) => p[0]);
  const t0 = from ?? Math.min(...times);
  const t1 = to ?? Math.max(...times);
  const innerW = width - MARGIN.left - MARGIN.right;
  const innerH = height - MARGIN.top - MARGIN.bottom;
  if (!all.length || !(t1 > t0)) {
    svg.append(s('text', { x: width / 2, y: height / 2, class: 'chart-empty', 'text-anchor': 'middle' }, empty));
    return svg;
  }
  let lo = Math.min(...all.map((p) => p[1]));
  let hi = Math.max(...all.map((p) => p[1]));
  if (zero) {
    lo = Math.min(lo, 0);
    hi = Math.max(hi, 0);
  }
  const yt = niceTicks(lo, hi, Math.max(3, Math.min(6, Math.floor(innerH / 40))));
  const y0 = yt[0];
  const y1 = yt[yt.length - 1];
  const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0)) * innerW;
  const y = (v) => MARGIN.top + innerH - ((v - y0) / (y1 - y0 || 1)) * innerH;

  const grid = s('g', { class: 'chart-grid' });
  for (const v of yt) {
    const yy = y(v).toFixed(1);
    grid.append(
      s('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: yy, y2: yy }),
      s('text', { x: MARGIN.left - 6, y: yy, dy: '0.32em', 'text-anchor': 'end' }, formatValue(v)),
    );
  }
  const { ticks, step } = timeTicks(t0, t1, Math.max(2, Math.floor(innerW / 80)));
  for (const t of ticks) {
    const xx = x(t).toFixed(1);
    grid.append(
      s('line', { class: 'tick', x1: xx, x2: xx, y1: MARGIN.top + innerH, y2: MARGIN.top + innerH + 4 }),
      s('text', { x: xx, y: height - 6, 'text-anchor': 'middle' }, timeLabel(t, step)),
    );
  }
  grid.append(s('line', { class: 'axis', x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + innerH, y2: MARGIN.top + innerH }));
  svg.append(grid);

  for (const se of series) {
    const pts = se.points.filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    const g = s('g', { class: ['chart-series', se.cls || 's1'] });
    if (pts.length > 1) {
      const d = pts.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join('');
      g.append(s('path', { class: 'line', d }));
    }
    const markers = se.markers ?? pts.length <= 400;
    if (markers) {
      for (const p of pts) {
        g.append(
          s(
            'circle',
            { class: 'point', cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: pts.length > 120 ? 2 : 3, 'data-point': '' },
            s('title', null, `${se.name}: ${formatValue(p[1])} at ${full.format(new Date(p[0]))}`),
          ),
        );
      }
    }
    svg.append(g);
  }
  return svg;
}

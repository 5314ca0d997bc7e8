// Hash routes (`#/gateways/0016c001ff10a235`): a table of patterns; each page renders into
// <main> and gets a context whose `signal` is aborted when the user navigates away, so that
// streams, timers and late answers of the old page stop.

const routes = [];
let current = null;

/** `pattern` like '/devices/:devEui'; `render(main, params, ctx)`. */
export function route(pattern, render) {
  const names = [];
  const regex = new RegExp(
    '^' +
      pattern.replace(/:([A-Za-z]+)/g, (_, name) => {
        names.push(name);
        return '([^/]+)';
      }) +
      '$',
  );
  routes.push({ regex, names, render });
}

export function path() {
  const hash = location.hash.replace(/^#/, '') || '/';
  return hash.split('?')[0];
}

export function go(target) {
  if (location.hash === '#' + target) render();
  else location.hash = '#' + target;
}

/** Leaves the current page (aborts its work). */
export function leave() {
  if (!current) return;
  current.controller.abort();
  for (const fn of current.cleanups) {
    try {
      fn();
    } catch (e) {
      console.error(e);
    }
  }
  current = null;
}

export function render() {
  leave();
  const main = document.getElementById('main');
  const p = path();
  const controller = new AbortController();
  const ctx = {
    signal: controller.signal,
    get active() {
      return !controller.signal.aborted;
    },
    onLeave(fn) {
      current?.cleanups.push(fn);
    },
    /** setInterval that stops with the page. */
    every(ms, fn) {
      const id = setInterval(fn, ms);
      this.onLeave(() => clearInterval(id));
    },
  };
  current = { controller, cleanups: [] };
  main.replaceChildren();
  for (const r of routes) {
    const m = r.regex.exec(p);
    if (!m) continue;
    const params = {};
    r.names.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
    markNav(p);
    Promise.resolve(r.render(main, params, ctx)).catch((e) => {
      if (e?.name === 'AbortError' || !ctx.active) return;
      console.error(e);
      main.prepend(Object.assign(document.createElement('div'), { className: 'alert', textContent: e.message || String(e) }));
      main.firstChild.setAttribute('role', 'alert');
    });
    return;
  }
  markNav(p);
  const notFound = document.createElement('div');
  notFound.className = 'card';
  notFound.textContent = 'There is no page at ' + p + '.';
  main.append(notFound);
}

function markNav(p) {
  for (const a of document.querySelectorAll('#nav a[href^="#/"]')) {
    const target = a.getAttribute('href').slice(1);
    const on = target === '/' ? p === '/' : p === target || p.startsWith(target + '/') || (target === '/applications' && p.startsWith('/devices/'));
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

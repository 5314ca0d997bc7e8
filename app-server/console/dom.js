// Building DOM without parsing HTML strings: every server value becomes a text node or an attribute
// value, so nothing the network sends can turn into markup or script.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  if (!attrs) return el;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') {
      el.textContent = String(value);
    } else if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'value' && 'value' in el) {
      el.value = String(value);
    } else if ((key === 'checked' || key === 'selected' || key === 'disabled') && key in el) {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return append(apply(document.createElement(tag), attrs), children);
}

/** An SVG element, same shape as h(). */
export function s(tag, attrs, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Appends children to `el`, skipping null/undefined/false (native append would print "null"). */
export function add(el, ...children) {
  return append(el, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

/** A visible error message (role=alert, so screen readers announce it). */
export function alertBox(message) {
  return h('div', { class: 'alert', role: 'alert' }, String(message));
}

/** Shows `message` as the alert at the top of `container`, replacing an earlier one. */
export function showAlert(container, message) {
  clearAlert(container);
  container.prepend(alertBox(message));
}

export function clearAlert(container) {
  for (const old of container.querySelectorAll(':scope > .alert')) old.remove();
}

/** A quiet "this part is not available" note (endpoint missing on this server, or no access). */
export function unavailable(text) {
  return h('p', { class: 'unavailable' }, text);
}

export function pill(state) {
  const label = String(state || 'UNKNOWN');
  return h('span', { class: ['pill', 'pill-' + label.toLowerCase().replace(/[^a-z]/g, '')] }, label.replace('_', ' '));
}

/** A labelled form field: label + input/select/textarea (or a row holding one) + optional hint. */
export function field(label, control, hint) {
  const input = control.matches('input, select, textarea') ? control : control.querySelector('input, select, textarea');
  const id = input.id || (input.id = 'f-' + Math.random().toString(36).slice(2, 9));
  const wrapper = h('div', { class: 'field' }, h('label', { for: id }, label), control);
  if (hint) {
    const hintId = id + '-hint';
    input.setAttribute('aria-describedby', hintId);
    wrapper.append(h('p', { class: 'hint', id: hintId }, hint));
  }
  return wrapper;
}

/** A checkbox with its label after it. */
export function checkbox(label, name, checked) {
  const input = h('input', { type: 'checkbox', name, checked });
  const id = (input.id = 'f-' + Math.random().toString(36).slice(2, 9));
  return h('div', { class: 'field field-check' }, input, h('label', { for: id }, label));
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map((o) => {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: String(v) === String(value) }, label);
    }),
  );
}

/** A table in a horizontally scrolling wrapper; `columns` are header labels. */
export function table(attrs, columns, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', attrs, h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', null, rows)),
  );
}

/** A page heading with actions on the right. */
export function pageHeader(title, subtitle, ...actions) {
  return h(
    'div',
    { class: 'page-header' },
    h('div', null, h('h1', null, title), subtitle ? h('p', { class: 'muted subtitle' }, subtitle) : null),
    actions.length ? h('div', { class: 'actions' }, actions) : null,
  );
}

export function section(title, attrs, ...children) {
  return h('section', Object.assign({ class: 'card' }, attrs), title ? h('h2', null, title) : null, children);
}

/** A definition list of [label, value] pairs; values may be nodes. */
export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.filter(Boolean).map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v === null || v === undefined || v === '' ? '—' : v))),
  );
}

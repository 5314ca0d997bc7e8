// Device profiles: list, create/edit (with the payload codec) and the codec tester, which runs
// the codec currently in the form, saved or not.

import { get, post, put, del, enc } from '../api.js';
import { h, pageHeader, table, field, select, checkbox, section, showAlert, clearAlert } from '../dom.js';
import { go } from '../router.js';
import { json, hexToBytes } from '../format.js';

const REGIONS = ['EU868', 'US915', 'AU915', 'AS923', 'AS923-2', 'AS923-3', 'AS923-4', 'KR920', 'IN865', 'RU864', 'CN470', 'CN779', 'EU433', 'ISM2400'];
const MAC_VERSIONS = ['1.0.0', '1.0.1', '1.0.2', '1.0.3', '1.0.4'];
const REG_PARAMS = [['A', '1.0.2rA'], ['B', '1.0.2rB'], 'RP002-1.0.0', 'RP002-1.0.1', 'RP002-1.0.2', 'RP002-1.0.3', 'RP002-1.0.4'];
const CODECS = [['NONE', 'None'], ['CAYENNE_LPP', 'Cayenne LPP'], ['JS', 'JavaScript']];
const CODEC_TEMPLATE = `// Called for every uplink; return {data: {...}} or {errors: ["..."]}.
function decodeUplink(input) {
  // input.bytes: array of numbers, input.fPort: number
  return { data: { temperature: ((input.bytes[0] << 8) | input.bytes[1]) / 10 } };
}

// Called for downlinks given as an object.
function encodeDownlink(input) {
  return { bytes: [input.data.level] };
}
`;

export async function profilesPage(main, _params, ctx) {
  main.append(pageHeader('Device profiles', 'What a kind of device speaks and how its payloads are decoded', h('a', { href: '#/device-profiles/new', class: 'button primary' }, 'Add device profile')));
  const list = await get('/device-profiles?limit=1000', { signal: ctx.signal });
  if (!ctx.active) return;
  if (!list.result.length) main.append(h('div', { class: 'card empty' }, h('p', null, 'No device profiles yet.'), h('p', { class: 'muted' }, 'A profile names the region, LoRaWAN version, activation and payload codec of a kind of device.')));
  const codecName = Object.fromEntries(CODECS);
  main.append(
    table(
      { id: 'device-profiles', class: 'data' },
      ['Name', 'Region', 'LoRaWAN', 'Activation', 'Class', 'ADR', 'Codec'],
      list.result.map((p) =>
        h(
          'tr',
          { 'data-id': p.id },
          h('td', { 'data-label': 'Name' }, h('a', { href: '#/device-profiles/' + p.id }, p.name)),
          h('td', { 'data-label': 'Region' }, p.region),
          h('td', { 'data-label': 'LoRaWAN' }, `${p.macVersion} (${p.regParamsRevision})`),
          h('td', { 'data-label': 'Activation' }, p.supportsOtaa ? 'OTAA' : 'ABP'),
          h('td', { 'data-label': 'Class' }, p.supportsClassC ? 'C' : 'A'),
          h('td', { 'data-label': 'ADR' }, p.adrEnabled ? 'on' : 'off'),
          h('td', { 'data-label': 'Codec' }, codecName[p.payloadCodec] || p.payloadCodec),
        ),
      ),
    ),
  );
}

export async function profileFormPage(main, params, ctx) {
  const editing = Boolean(params.id);
  const stored = editing ? await get('/device-profiles/' + enc(params.id), { signal: ctx.signal }) : null;
  if (!ctx.active) return;
  const p = stored || {
    name: '',
    region: 'EU868',
    macVersion: '1.0.3',
    regParamsRevision: 'RP002-1.0.3',
    supportsOtaa: true,
    supportsClassC: false,
    adrEnabled: true,
    payloadCodec: 'NONE',
    payloadCodecScript: '',
  };
  const regions = REGIONS.includes(p.region) ? REGIONS : [p.region, ...REGIONS];
  const codec = select('payloadCodec', CODECS, p.payloadCodec);
  const script = h('textarea', { name: 'payloadCodecScript', rows: 14, class: 'mono code', spellcheck: 'false', placeholder: CODEC_TEMPLATE }, p.payloadCodecScript || '');
  const scriptField = field('Codec script (JavaScript)', script, 'Used with the JavaScript codec: decodeUplink(input) and, for object downlinks, encodeDownlink(input), as in ChirpStack v4.');
  const template = h('button', { type: 'button', class: 'small' }, 'Insert example');
  template.addEventListener('click', () => {
    if (!script.value.trim() || confirm('Replace the script with the example?')) script.value = CODEC_TEMPLATE;
  });
  scriptField.append(template);
  // Dimmed, not hidden, for the other codecs: a script typed first and the codec chosen
  // after must not be lost or unreachable.
  const syncScript = () => scriptField.classList.toggle('inactive', codec.value !== 'JS');
  codec.addEventListener('change', syncScript);

  const form = h(
    'form',
    { 'data-form': 'device-profile', class: 'card form', novalidate: true },
    field('Name', h('input', { name: 'name', value: p.name, required: true, maxlength: 100 })),
    h(
      'div',
      { class: 'inline-fields' },
      field('Region', select('region', regions, p.region)),
      field('LoRaWAN version', select('macVersion', MAC_VERSIONS.includes(p.macVersion) ? MAC_VERSIONS : [p.macVersion, ...MAC_VERSIONS], p.macVersion)),
      field('Regional parameters', select('regParamsRevision', REG_PARAMS, p.regParamsRevision)),
    ),
    h(
      'fieldset',
      { class: 'checks' },
      h('legend', null, 'Capabilities'),
      checkbox('Joins over the air (OTAA); off = ABP', 'supportsOtaa', p.supportsOtaa),
      checkbox('Class C (listens continuously)', 'supportsClassC', p.supportsClassC),
      checkbox('Adaptive data rate (ADR)', 'adrEnabled', p.adrEnabled),
    ),
    field('Payload codec', codec),
    scriptField,
    h(
      'div',
      { class: 'form-actions' },
      h('button', { type: 'submit', class: 'primary' }, editing ? 'Save' : 'Create device profile'),
      h('a', { href: '#/device-profiles', class: 'button' }, 'Cancel'),
    ),
  );
  syncScript();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const f = form.elements;
    // The stored profile's other fields (ADR limits, measurements…) are sent back unchanged.
    const body = Object.assign({}, stored || {}, {
      name: f.name.value,
      region: f.region.value,
      macVersion: f.macVersion.value,
      regParamsRevision: f.regParamsRevision.value,
      supportsOtaa: f.supportsOtaa.checked,
      supportsClassC: f.supportsClassC.checked,
      adrEnabled: f.adrEnabled.checked,
      payloadCodec: f.payloadCodec.value,
      payloadCodecScript: script.value,
    });
    try {
      const saved = editing ? await put('/device-profiles/' + enc(p.id), body) : await post('/device-profiles', body);
      if (editing) {
        showSaved(form);
      } else {
        go('/device-profiles/' + saved.id);
      }
    } catch (e) {
      showAlert(form, e.message);
    }
  });

  const actions = [];
  if (editing) {
    const remove = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
    remove.addEventListener('click', async () => {
      if (!confirm(`Delete device profile ${p.name}?`)) return;
      try {
        await del('/device-profiles/' + enc(p.id));
        go('/device-profiles');
      } catch (e) {
        showAlert(main, e.message);
      }
    });
    actions.push(remove);
  }
  main.append(
    pageHeader(editing ? p.name : 'Add device profile', editing ? p.id : null, ...actions),
    h('div', { class: 'grid-form' }, form, codecTester(form)),
  );
  if (!editing) form.elements.name.focus();
}

function showSaved(form) {
  const note = form.querySelector('.saved') || h('span', { class: 'saved', role: 'status' });
  note.textContent = 'Saved.';
  form.querySelector('.form-actions').append(note);
  setTimeout(() => note.remove(), 3000);
}

function codecTester(profileForm) {
  const result = h('pre', { id: 'codec-test-result', 'aria-live': 'polite' }, 'Paste a payload and run the codec in the form above, saved or not.');
  const form = h(
    'form',
    { 'data-form': 'codec-test', class: 'form compact', novalidate: true },
    h(
      'div',
      { class: 'inline-fields' },
      field('FPort', h('input', { name: 'fPort', type: 'number', min: 1, max: 223, value: 1, required: true })),
      field('Payload (hex)', h('input', { name: 'bytes', class: 'mono', placeholder: '0167010f', autocomplete: 'off', spellcheck: 'false', required: true })),
    ),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit' }, 'Decode')),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearAlert(form);
    const pf = profileForm.elements;
    const hex = form.elements.bytes.value.replace(/\s+/g, '');
    result.className = '';
    try {
      hexToBytes(hex);
    } catch {
      showAlert(form, 'bytes: expected pairs of hex digits');
      return;
    }
    try {
      const answer = await post('/device-profiles/test-codec', {
        payloadCodec: pf.payloadCodec.value,
        payloadCodecScript: pf.payloadCodecScript.value,
        fPort: Number(form.elements.fPort.value),
        hex,
      });
      if (answer.error) {
        result.className = 'error';
        result.textContent = answer.error;
      } else {
        result.className = 'ok';
        result.textContent = answer.object === null || answer.object === undefined ? 'null (this codec decodes nothing)' : json(answer.object);
      }
    } catch (e) {
      // 404/405: a server without the endpoint (it routes the path as a profile id).
      showAlert(form, e.status === 404 || e.status === 405 ? 'The codec tester is not available on this server.' : e.message);
    }
  });
  return section('Codec tester', { class: 'card tester' }, h('p', { class: 'muted hint' }, 'Runs the codec currently selected in the form (the script as typed) on these bytes.'), form, result);
}

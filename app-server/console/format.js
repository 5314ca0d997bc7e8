// Formatting and conversions shared by the pages.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export function absolute(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateTime.format(d);
}

export function clock(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : timeOnly.format(d);
}

/** "12 s ago", "3 min ago", "2 h ago", "5 d ago"; "never" for null. */
export function ago(iso, now = Date.now()) {
  if (!iso) return 'never';
  const secs = Math.round((now - new Date(iso).getTime()) / 1000);
  if (Number.isNaN(secs)) return String(iso);
  if (secs < 5) return 'just now';
  if (secs < 60) return secs + ' s ago';
  if (secs < 3600) return Math.floor(secs / 60) + ' min ago';
  if (secs < 86400) return Math.floor(secs / 3600) + ' h ago';
  return Math.floor(secs / 86400) + ' d ago';
}

export function hexToBytes(hex) {
  const clean = hex.replace(/\s+/g, '').replace(/^0x/i, '');
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error('hex: expected pairs of hex digits');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function bytesToBase64(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function base64ToBytes(b64) {
  const binary = atob(b64.replace(/\s+/g, ''));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function base64ToHex(b64) {
  try {
    return bytesToHex(base64ToBytes(b64 || ''));
  } catch {
    return '';
  }
}

/** Random hex of `n` bytes (EUIs, keys), from the browser's CSPRNG. */
export function randomHex(n) {
  return bytesToHex(crypto.getRandomValues(new Uint8Array(n)));
}

export function json(value, indent = 2) {
  return JSON.stringify(value, null, indent);
}

export function number(n, digits = 2) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return n === null || n === undefined ? '' : String(n);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits).replace(/\.?0+$/, '');
}

export function mhz(hz) {
  return typeof hz === 'number' ? (hz / 1e6).toFixed(1) + ' MHz' : '';
}

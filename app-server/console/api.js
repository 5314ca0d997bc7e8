// The REST client: the token lives in sessionStorage only (gone when the tab closes) and is
// sent as a Bearer header; errors carry the server's `error` text.

const TOKEN_KEY = 'loraflow.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }

  /** The endpoint does not exist on this server (older binary) or this key may not use it. */
  get unavailable() {
    return this.status === 404 || this.status === 403;
  }
}

let onUnauthorized = () => {};

/** Called when the server refuses the stored token (revoked, rotated). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export function authHeaders(extra) {
  return Object.assign({ Authorization: 'Bearer ' + (token() || '') }, extra);
}

async function errorOf(response) {
  let message = response.status + ' ' + response.statusText;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, message, Number(response.headers.get('Retry-After')) || undefined);
}

/** Calls `/api{path}`; resolves to the parsed JSON (null for 204), rejects with ApiError. */
export async function request(method, path, body, { signal, quiet401 } = {}) {
  const init = { method, headers: authHeaders(), signal, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch('/api' + path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'The server cannot be reached (' + e.message + ')');
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !quiet401) onUnauthorized(error);
    throw error;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body, opts);
export const put = (path, body, opts) => request('PUT', path, body, opts);
export const del = (path, opts) => request('DELETE', path, undefined, opts);
/** GET of something that may not exist yet (a device's keys, its session): null on 404. */
export async function getIfExists(path, opts) {
  try {
    return await get(path, opts);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/** `?a=1&b=2` from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? '?' + s : '';
}

export const enc = encodeURIComponent;

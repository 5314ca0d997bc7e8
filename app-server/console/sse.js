// Server-sent events over fetch(): EventSource cannot send the Authorization header, so the
// stream is read with a ReadableStream and parsed here (the text/event-stream format: `event:`,
// `data:`, `id:` and `:` comment lines, an empty line ends an event). A dropped stream is
// reopened with a growing delay; 401/403/404 stop for good.

import { authHeaders, ApiError } from './api.js';

const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

/** Splits text/event-stream input into events; feed it decoded chunks. */
export class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const crlf = this.buffer.startsWith('\r\n', newline);
      // A lone \r at the end may be the first half of \r\n: wait for more input.
      if (!crlf && this.buffer[newline] === '\r' && newline === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(newline + (crlf ? 2 : 1));
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent(this.event || 'message', this.data.join('\n'), this.id);
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') this.event = value;
    else if (name === 'data') this.data.push(value);
    else if (name === 'id') this.id = value;
  }
}

/**
 * Opens `/api{path}` as an event stream until `signal` aborts.
 * handlers.onEvent(kind, parsedData, id); handlers.onStatus(state, detail) with state
 * 'connecting' | 'live' | 'reconnecting' (detail: seconds) | 'unavailable' (detail: message)
 * | 'unauthorized'.
 */
export function openStream(path, handlers, signal) {
  let delay = MIN_DELAY_MS;
  const status = (state, detail) => handlers.onStatus?.(state, detail);

  async function once() {
    status('connecting');
    const controller = new AbortController();
    const abort = () => controller.abort();
    signal.addEventListener('abort', abort);
    try {
      const response = await fetch('/api' + path, {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (!response.ok) {
        let message = response.status + ' ' + response.statusText;
        try {
          message = (await response.json()).error || message;
        } catch {
          // keep the status line
        }
        return new ApiError(response.status, message);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new EventParser((kind, data, id) => {
        let parsed = data;
        try {
          parsed = JSON.parse(data);
        } catch {
          // not JSON: hand over the text
        }
        if (kind === 'ready') {
          delay = MIN_DELAY_MS;
          status('live');
        }
        handlers.onEvent(kind, parsed, id);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
      return null;
    } catch (e) {
      if (signal.aborted) return null;
      return e;
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  (async () => {
    while (!signal.aborted) {
      const error = await once();
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) {
        status('unauthorized', error.message);
        return;
      }
      if (error instanceof ApiError && (error.status === 404 || error.status === 403)) {
        status('unavailable', error.message);
        return;
      }
      const secs = Math.round(delay / 1000);
      status('reconnecting', secs);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, delay);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          resolve();
        });
      });
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  })();
}

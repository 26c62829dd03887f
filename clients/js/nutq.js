// nutq browser client: the native WebSocket protocol (/v1/tts/ws, docs/protocols/native.md).
// An ES module with no dependencies and no build step; types in nutq.d.ts.
//
// One NutqClient is one WebSocket carrying many contexts (utterances). Text goes in piece by
// piece (sendText), flush() speaks what is pending, close() ends the context after its audio,
// cancel() stops it at once. `for await (const ev of ctx)` yields {type: "audio" | "timestamps" |
// "flushed" | "resumed" | "done", ...} and throws NutqError for the server's errors about it.
//
// Reconnection works as in the Python client: after a retryable close (1001, 1006, 1011, 1012,
// 1013) or a `draining` error, the client reconnects with exponential backoff and reopens every
// unfinished context with the text no `flushed` or word timestamp had confirmed as spoken, then
// its pending flushes and close. Text given while disconnected is recorded and sent on reopening.

export const RETRYABLE_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
export const SETTINGS = new Set(["voice", "language", "output_format", "sample_rate", "timestamps", "temperature",
  "cfg_weight", "exaggeration", "seed", "max_tokens", "normalize"]);
const CONTEXT_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export class NutqError extends Error {
  constructor(code, message, { retryable = false, contextId = null, param = null, status = null, closeCode = null } = {}) {
    super(`${code}: ${message}`);
    this.name = "NutqError";
    Object.assign(this, { code, retryable, contextId, param, status, closeCode });
    this.detail = message;
  }
}

function checkSettings(settings) {
  const unknown = Object.keys(settings).filter((k) => !SETTINGS.has(k));
  if (unknown.length) throw new TypeError(`unknown setting(s) ${unknown.join(", ")}; known: ${[...SETTINGS].join(", ")}`);
}

/** The native endpoint for a server address (http(s) or ws(s); default path /v1/tts/ws). */
export function wsUrl(url) {
  const u = new URL(url, typeof location !== "undefined" ? location.href : undefined);
  u.protocol = { "http:": "ws:", "https:": "wss:", "ws:": "ws:", "wss:": "wss:" }[u.protocol] ?? u.protocol;
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/v1/tts/ws";
  return u.toString();
}

// ------------------------------------------------------------------------------ audio decoding

const G711_RATE = 8000;

function mulaw(b) {
  b = ~b & 0xff;
  const t = (((b & 0x0f) << 3) + 0x84) << ((b & 0x70) >> 4);
  return ((b & 0x80) ? 0x84 - t : t - 0x84) / 32768;
}

function alaw(b) {
  b ^= 0x55;
  const seg = (b & 0x70) >> 4;
  let t = (b & 0x0f) << 4;
  t = seg === 0 ? t + 8 : (t + 0x108) << (seg - 1);
  return ((b & 0x80) ? t : -t) / 32768;
}

const MULAW = Float32Array.from({ length: 256 }, (_, i) => mulaw(i));
const ALAW = Float32Array.from({ length: 256 }, (_, i) => alaw(i));

/** Turns a context's encoded chunks into Float32 samples, carrying partial samples (and a WAV
 * header split across chunks) from one chunk to the next. The WAV header is never played: it
 * would be a click. Compressed formats (mp3, opus, ...) are not decoded here. */
export class PcmDecoder {
  constructor(format) {
    const known = { pcm_s16le: 2, pcm_f32le: 4, wav: 2, wav_f32: 4, mulaw: 1, alaw: 1 };
    if (!(format in known)) throw new NutqError("unsupported_format", `the player decodes ${Object.keys(known).join(", ")}, not ${format}`);
    this.format = format;
    this.width = known[format];
    this.header = format.startsWith("wav");
    this.pending = new Uint8Array(0);
  }

  decode(bytes) {
    let buf = bytes;
    if (this.pending.length) {
      buf = new Uint8Array(this.pending.length + bytes.length);
      buf.set(this.pending);
      buf.set(bytes, this.pending.length);
    }
    let start = 0;
    if (this.header) {
      const data = wavDataOffset(buf);
      if (data < 0) { this.pending = buf; return new Float32Array(0); }  // header not complete yet
      start = data;
      this.header = false;
    }
    const n = Math.floor((buf.length - start) / this.width);
    this.pending = buf.slice(start + n * this.width);
    const view = new DataView(buf.buffer, buf.byteOffset + start, n * this.width);
    const out = new Float32Array(n);
    if (this.width === 2) for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
    else if (this.width === 4) for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    else {
      const table = this.format === "mulaw" ? MULAW : ALAW;
      for (let i = 0; i < n; i++) out[i] = table[buf[start + i]];
    }
    return out;
  }
}

/** Offset of the first sample after a RIFF/WAVE header, or -1 while the header is incomplete. */
function wavDataOffset(b) {
  if (b.length < 12) return -1;
  const tag = (o) => String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3]);
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new NutqError("invalid_audio", "wav stream without a RIFF/WAVE header");
  let o = 12;
  while (o + 8 <= b.length) {
    const size = b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24);
    if (tag(o) === "data") return o + 8;
    o += 8 + size + (size & 1);
  }
  return -1;
}

// ------------------------------------------------------------------------------ client

export class NutqClient {
  /** `settings`: connection defaults (voice, output_format, ...). Browsers cannot send an
   * Authorization header on a WebSocket: use a server without keys, or a proxy that adds it. */
  constructor(url, { reconnect = true, maxRetries = 6, backoffMs = 250, maxBackoffMs = 4000, ...settings } = {}) {
    checkSettings(settings);
    Object.assign(this, { url: wsUrl(url), reconnect, maxRetries, backoffMs, maxBackoffMs, defaults: settings });
    this.reconnects = 0;
    this.contexts = new Map();
    this.ws = null;
    this._ids = 0;
    this._attempt = 0;
    this._closed = false;
    this._opening = null;
    this._pendingError = null;
    this._drops = 0;  // retryable closes in a row with nothing received in between
  }

  /** Resolves once the socket is open (retrying with backoff when it cannot be opened). */
  connect() {
    if (this._closed) return Promise.reject(new NutqError("client_closed", "the client is closed"));
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve();
    if (!this._opening) this._opening = this._open().finally(() => { this._opening = null; });
    return this._opening;
  }

  context(contextId = null, settings = {}) {
    checkSettings(settings);
    const id = contextId ?? `c${++this._ids}`;
    if (!CONTEXT_ID.test(id)) throw new TypeError(`context id must be 1-64 characters of A-Z a-z 0-9 . _ : -, got ${id}`);
    if (this.contexts.has(id)) throw new TypeError(`context ${id} is still open on this connection`);
    const ctx = new NutqContext(this, id, settings);
    this.contexts.set(id, ctx);
    return ctx;
  }

  close() {
    this._closed = true;
    if (this.ws) this.ws.close(1000);
    for (const ctx of [...this.contexts.values()]) ctx._fail(new NutqError("client_closed", "the client was closed"));
  }

  async _open() {
    for (;;) {
      try {
        await this._openOnce();
        this._attempt = 0;
        return;
      } catch (err) {
        this._attempt += 1;
        if (!this.reconnect || this._attempt > this.maxRetries || this._closed) {
          throw new NutqError("connect_failed", `cannot connect to ${this.url}`, { retryable: true });
        }
        await new Promise((r) => setTimeout(r, this._delay(this._attempt)));
      }
    }
  }

  _delay(attempt) {
    const base = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** (attempt - 1));
    return base * (0.5 + Math.random() / 2);  // jitter: clients cut off together do not return together
  }

  _openOnce() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        if (Object.keys(this.defaults).length) ws.send(JSON.stringify({ type: "config", ...this.defaults }));
        for (const ctx of this.contexts.values()) ctx._sync(ws);  // first open, or replay after a drop
        resolve();
      };
      ws.onmessage = (ev) => this._dispatch(ev.data);
      ws.onclose = (ev) => {
        if (!opened) { reject(new Error(`closed before opening (${ev.code})`)); return; }
        this._onClosed(ws, ev.code, ev.reason);
      };
    });
  }

  _onClosed(ws, code, reason) {
    if (this.ws === ws) this.ws = null;
    // contexts that never sent anything have nothing on the server to lose
    const open = [...this.contexts.values()].filter((c) => !c._finished && c._onWs !== null);
    if (this._closed || !open.length) return;  // the next send connects again
    if (!(this.reconnect && RETRYABLE_CLOSE_CODES.has(code))) {
      const err = this._pendingError ?? new NutqError("connection_closed", `WebSocket closed with ${code}${reason ? `: ${reason}` : ""}`,
        { retryable: RETRYABLE_CLOSE_CODES.has(code), closeCode: code });
      this._pendingError = null;
      for (const c of open) c._fail(err);
      return;
    }
    // a server that accepts and drops at once must not be hammered: back off between drops too
    this._drops += 1;
    if (this._drops > this.maxRetries) {
      const err = new NutqError("connection_closed", `${this._drops - 1} reconnections in a row dropped (${code})`, { retryable: true, closeCode: code });
      for (const c of open) c._fail(err);
      return;
    }
    this.reconnects += 1;
    setTimeout(() => this.connect().catch((err) => { for (const c of open) c._fail(err); }), this._delay(this._drops));
  }

  _send(ctx, msg) {
    // The caller has recorded the change in `ctx` first: a context not yet open on this socket
    // (first use, or after a drop) gets all of its recorded state from _sync instead of `msg`.
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (ctx._onWs === ws) ws.send(JSON.stringify(msg));
      else ctx._sync(ws);
    } else if (!this._closed) {
      this.connect().catch((err) => ctx._fail(err));
    }
  }

  _dispatch(data) {
    this._drops = 0;  // the connection works
    if (data instanceof ArrayBuffer) {
      const b = new Uint8Array(data);
      const n = b[0];
      if (!n || b.length < 1 + n) return;
      const id = String.fromCharCode(...b.subarray(1, 1 + n));
      this.contexts.get(id)?._onAudio(b.subarray(1 + n));
      return;
    }
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    const ctx = msg.context_id ? this.contexts.get(msg.context_id) : undefined;
    if (msg.type === "error") {
      const err = new NutqError(msg.code, msg.message, { retryable: msg.retryable, contextId: msg.context_id ?? null, param: msg.param ?? null });
      if (ctx) ctx._onError(err);
      else {
        const open = [...this.contexts.values()].filter((c) => !c._finished);
        if (open.length) open.forEach((c) => c._push(err));
        else this._pendingError = err;
      }
    } else if (ctx) {
      if (msg.type === "timestamps") ctx._onWords(msg.words);
      else if (msg.type === "flushed") ctx._onFlushed();
      else if (msg.type === "done") ctx._onDone(msg);
    }
  }
}

export class NutqContext {
  constructor(client, id, settings) {
    Object.assign(this, { client, id, settings });
    const eff = { ...client.defaults, ...settings };
    this.outputFormat = eff.output_format ?? "pcm_s16le";
    this.sampleRate = eff.sample_rate ?? (["mulaw", "alaw"].includes(this.outputFormat) ? G711_RATE : 24000);
    this.text = "";
    this._acked = 0;  // text before this offset is confirmed spoken
    this._flushes = [];  // offsets of flushes not yet confirmed
    this._closing = this._cancelled = this._draining = this._finished = false;
    this._error = null;
    this._onWs = null;  // the socket the context is open on
    this._baseChars = 0;  // where the text of the current server-side context starts
    this._baseS = 0;  // seconds of audio before it (decodable formats)
    this._segSamples = 0;  // samples decoded from the current server-side context
    this._events = [];
    this._waiter = null;
    this._decoder = null;
  }

  sendText(piece) {
    if (typeof piece !== "string") throw new TypeError("text must be a string");
    this._checkWritable();
    if (!piece) return;
    this.text += piece;
    this.client._send(this, { type: "text", context_id: this.id, text: piece });
  }

  flush() {
    this._checkWritable();
    this._flushes.push(this.text.length);
    this.client._send(this, { type: "flush", context_id: this.id });
  }

  close() {
    this._checkWritable();
    this._closing = true;
    this.client._send(this, { type: "close_context", context_id: this.id });
  }

  /** Barge-in: events not yet read are dropped; the iterator ends with done (cancelled). */
  cancel() {
    if (this._finished) return;
    this._cancelled = true;
    this._events = this._events.filter((e) => e instanceof Error || !["audio", "timestamps", "flushed"].includes(e.type));
    const ws = this.client.ws;
    if (this._onWs && ws === this._onWs && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "cancel", context_id: this.id }));
    else this._onDone({ reason: "cancelled", timings: { audio_s: 0, phrases: 0 } });
  }

  _checkWritable() {
    if (this._error) throw this._error;
    const pending = this.client._pendingError;  // a connection-level error no context took yet
    if (pending) { this.client._pendingError = null; throw pending; }
    if (this._closing || this._cancelled || this._finished) throw new NutqError("context_closed", `context ${this.id} is closed or cancelled`, { contextId: this.id });
  }

  /** Make the server-side context match ours on `ws`: open it there and send all that is not
   * confirmed spoken (all of it on first use), its pending flushes and its close. */
  _sync(ws) {
    if (this._onWs === ws || this._finished) return;
    if (this._cancelled) { this._onDone({ reason: "cancelled", timings: { audio_s: 0, phrases: 0 } }); return; }
    const replay = this._onWs !== null;
    if (!replay && !this.text && !this._flushes.length && !this._closing) return;  // nothing to open it for yet
    this._onWs = ws;
    this._baseS = this._heardS();
    this._segSamples = 0;
    this._baseChars = this._acked;
    this._decoder = null;  // a new server-side context: a new encoded stream (a new WAV header)
    this._draining = false;
    if (replay) this._push({ type: "resumed", contextId: this.id, charOffset: this._acked, attempt: this.client.reconnects });
    const send = (m) => ws.send(JSON.stringify({ context_id: this.id, ...m }));
    send({ type: "config", ...this.settings });
    let pos = this._acked;
    for (const mark of this._flushes) {
      if (mark > pos) { send({ type: "text", text: this.text.slice(pos, mark) }); pos = mark; }
      send({ type: "flush" });
    }
    if (pos < this.text.length) send({ type: "text", text: this.text.slice(pos) });
    if (this._closing) send({ type: "close_context" });
  }

  _push(ev) {
    if (this._waiter) { const w = this._waiter; this._waiter = null; w(ev); } else this._events.push(ev);
  }

  _onAudio(data) {
    if (this._cancelled || this._finished) return;
    let samples = null;
    try {
      this._decoder ??= new PcmDecoder(this.outputFormat);
      samples = this._decoder.decode(data);
    } catch { samples = null; }  // a compressed format: the bytes are there, samples are not
    if (samples) this._segSamples += samples.length;
    this._push({ type: "audio", contextId: this.id, data, samples, sampleRate: this.sampleRate });
  }

  /** Seconds of audio received; 0 when the format is not decoded here (durations unknown). */
  _heardS() {
    return this._baseS + this._segSamples / this.sampleRate;
  }

  _onWords(items) {
    if (this._cancelled || !items.length) return;
    const words = items.map((w) => ({ ...w, start: w.start + this._baseS, end: w.end + this._baseS,
      char_start: w.char_start + this._baseChars, char_end: w.char_end + this._baseChars }));
    // a word counts as spoken once its audio has arrived (always, when durations are unknown)
    const heard = this._heardS();
    const decoded = this._segSamples > 0;
    const spoken = words.filter((w) => !decoded || w.end <= heard + 1e-3).map((w) => w.char_end);
    if (spoken.length) this._acked = Math.max(this._acked, ...spoken);
    this._push({ type: "timestamps", contextId: this.id, words });
  }

  _onFlushed() {
    if (this._flushes.length) this._acked = Math.max(this._acked, this._flushes.shift());
    if (!this._cancelled) this._push({ type: "flushed", contextId: this.id });
  }

  _onError(err) {
    if (err.code === "draining" && this.client.reconnect && !this._cancelled) { this._draining = true; return; }
    if (!this._finished) this._push(err);
  }

  _onDone(msg) {
    if (this._draining && msg.reason === "error") return;  // replayed after reconnecting
    this._finish();
    this._push({ type: "done", contextId: this.id, reason: msg.reason, timings: msg.timings });
  }

  _fail(err) {
    if (this._finished) return;
    this._finish();
    this._error = err;
    this._push(err);
  }

  _finish() {
    this._finished = true;
    if (this.client.contexts.get(this.id) === this) this.client.contexts.delete(this.id);
  }

  _next() {
    if (this._events.length) return Promise.resolve(this._events.shift());
    return new Promise((resolve) => { this._waiter = resolve; });
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const ev = await this._next();
      if (ev instanceof Error) { this._events = []; throw ev; }
      yield ev;
      if (ev.type === "done") return;
    }
  }
}

/** GET /v1/voices (the demo's voice list). */
export async function listVoices(baseUrl = "", { apiKey } = {}) {
  const r = await fetch(new URL("/v1/voices", baseUrl || location.href), { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new NutqError(body.error?.code ?? `http_${r.status}`, body.error?.message ?? r.statusText, { status: r.status, retryable: [429, 503].includes(r.status) });
  return body.data;
}

// AudioWorklet side of NutqPlayer (player.js): a growable ring buffer of the stream's samples at
// their own rate (24 kHz from nutq), resampled to the context's rate by linear interpolation as
// they are played. Chunks are read back to back from the ring, so chunk seams have no gaps; the
// interpolation phase carries across chunks and render quanta.
//
// Jitter buffer: playback starts once `jitterMs` of audio is buffered (or the stream has ended);
// the default is below nutq's first chunk, so the first chunk starts playback when it arrives.
// If the buffer runs dry before the stream's end, that is one underrun: silence until the jitter
// target is buffered again. `cancel` empties the ring at once: the next quantum is silent.

class NutqPlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.buf = new Float32Array(24000 * 10);
    this.w = 0;  // samples written, ever (ring index = count % capacity)
    this.r = 0;  // samples read, ever
    this.pos = 0;  // fractional read offset from r, in input samples
    this.jitterMs = options.processorOptions?.jitterMs ?? 60;
    this.reset(24000);
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  reset(rate) {
    this.r = this.w;
    this.pos = 0;
    this.rate = rate;
    this.step = rate / sampleRate;
    this.active = false;  // an utterance has begun and not drained or been cancelled
    this.playing = false;
    this.ended = false;
    this.started = false;  // has played at least one frame since begin
    this.received = 0;  // input samples pushed since begin
    this.played = 0;  // output frames carrying audio since begin
    this.consumed = 0;  // input samples played since begin
    this.underruns = 0;
    this.underrunFrames = 0;
    this.quanta = 0;
  }

  onMessage(m) {
    if (m.type === "begin") {
      this.reset(m.rate ?? 24000);
      if (m.jitterMs !== undefined) this.jitterMs = m.jitterMs;
      this.active = true;
    } else if (m.type === "push") {
      if (!this.active) return;  // after a cancel: late chunks of the cancelled stream
      if (m.rate !== this.rate) { this.rate = m.rate; this.step = m.rate / sampleRate; }
      this.write(m.samples);
    } else if (m.type === "end") {
      this.ended = true;
    } else if (m.type === "cancel") {
      const buffered = this.w - this.r;
      this.r = this.w;
      this.pos = 0;
      this.active = this.playing = this.ended = false;
      this.port.postMessage({ type: "cancelled", id: m.id, frame: currentFrame, dropped: buffered });
    } else if (m.type === "stats") {
      this.port.postMessage({ type: "stats", id: m.id, stats: this.stats() });
    }
  }

  stats() {
    return { received: this.received, played: this.played, consumed: this.consumed, underruns: this.underruns,
             underrunFrames: this.underrunFrames, buffered: this.w - this.r, playing: this.playing,
             active: this.active, inputRate: this.rate, outputRate: sampleRate, frame: currentFrame };
  }

  write(samples) {
    const need = this.w - this.r + samples.length;
    if (need > this.buf.length) {  // grow, keeping the unread samples in order
      const bigger = new Float32Array(Math.max(2 * this.buf.length, need));
      for (let i = this.r; i < this.w; i++) bigger[i - this.r] = this.buf[i % this.buf.length];
      this.w -= this.r;
      this.r = 0;
      this.buf = bigger;
    }
    const cap = this.buf.length;
    for (let i = 0; i < samples.length; i++) this.buf[(this.w + i) % cap] = samples[i];
    this.w += samples.length;
    this.received += samples.length;
  }

  at(k) {
    return this.buf[(this.r + k) % this.buf.length];
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const ch = out[0];
    const n = ch.length;
    let wrote = 0;
    if (this.active && !this.playing) {
      const avail = this.w - this.r;
      if (avail > 0 && (this.ended || avail >= this.jitterMs / 1000 * this.rate)) this.playing = true;
    }
    if (this.playing) {
      const avail = this.w - this.r;
      for (; wrote < n; wrote++) {
        const k = Math.floor(this.pos);
        if (k + 1 < avail) {
          const a = this.at(k);
          ch[wrote] = a + (this.at(k + 1) - a) * (this.pos - k);
        } else if (this.ended && k < avail) {
          ch[wrote] = this.at(k);  // the stream's last sample: nothing after it to interpolate to
        } else break;
        this.pos += this.step;
      }
      const adv = Math.min(Math.floor(this.pos), avail);
      this.r += adv;
      this.pos -= adv;
      this.consumed += adv;
      if (wrote > 0 && !this.started) {
        this.started = true;
        this.port.postMessage({ type: "firstsound", frame: currentFrame, contextTime: currentFrame / sampleRate });
      }
      this.played += wrote;
      if (wrote < n) {
        this.playing = false;
        if (this.ended) {
          this.consumed += this.w - this.r;
          this.r = this.w;
          this.pos = 0;
          this.active = false;
          this.port.postMessage({ type: "drained", stats: this.stats() });
        } else {
          this.underruns += 1;
          this.port.postMessage({ type: "underrun", count: this.underruns, frame: currentFrame + wrote });
        }
      }
    }
    if (this.active && this.started && !this.playing && !this.ended) this.underrunFrames += n - wrote;
    ch.fill(0, wrote);
    for (let c = 1; c < out.length; c++) out[c].set(ch);
    if (this.active && ++this.quanta % 8 === 0) this.port.postMessage({ type: "position", seconds: this.consumed / this.rate });
    return true;
  }
}

registerProcessor("nutq-player", NutqPlayerProcessor);

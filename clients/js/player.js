// NutqPlayer: gapless playback of nutq's streamed PCM in an AudioWorklet (player-worklet.js),
// with a small jitter buffer, underrun counting, instant cancel (barge-in) and time to first
// sound measured in the page.
//
//   const player = await NutqPlayer.create({ jitterMs: 60 });
//   player.begin();                                 // a new utterance: counters reset, clock starts
//   for await (const ev of ctx) {
//     if (ev.type === "audio") player.push(ev.samples, ev.sampleRate);
//     if (ev.type === "done") player.end();
//   }
//   await player.drained();  player.firstSoundMs;  await player.stats();

export class NutqPlayer {
  static async create({ audioContext = null, jitterMs = 60, workletUrl = new URL("./player-worklet.js", import.meta.url) } = {}) {
    const ac = audioContext ?? new AudioContext({ latencyHint: "interactive" });
    await ac.audioWorklet.addModule(workletUrl);
    const node = new AudioWorkletNode(ac, "nutq-player", { numberOfInputs: 0, outputChannelCount: [1], processorOptions: { jitterMs } });
    return new NutqPlayer(ac, node, jitterMs);
  }

  constructor(audioContext, node, jitterMs) {
    this.audioContext = audioContext;
    this.node = node;  // connected to the destination; disconnect it to route elsewhere
    this.node.connect(audioContext.destination);
    this.jitterMs = jitterMs;
    this.firstSoundMs = null;  // from begin() to the first sample at the output, in ms
    this.underruns = 0;
    this.onfirstsound = null;  // (ms) => {}
    this.onunderrun = null;  // (count) => {}
    this.onposition = null;  // (seconds of the utterance played) => {}
    this._t0 = 0;
    this._ids = 0;
    this._replies = new Map();
    this._drainWaiters = [];
    this._active = false;
    node.port.onmessage = (e) => this._onMessage(e.data);
  }

  /** Start an utterance of `rate` Hz audio; time to first sound counts from now. */
  begin({ rate = 24000, jitterMs = this.jitterMs } = {}) {
    if (this.audioContext.state !== "running") this.audioContext.resume();
    this._t0 = performance.now();
    this.firstSoundMs = null;
    this.underruns = 0;
    this._active = true;
    this.node.port.postMessage({ type: "begin", rate, jitterMs });
  }

  /** Queue samples (Float32Array in [-1, 1], at `rate` Hz) behind what is buffered. */
  push(samples, rate = 24000) {
    if (!samples || !samples.length) return;
    const copy = samples.slice();  // transferred: the caller keeps its own array
    this.node.port.postMessage({ type: "push", samples: copy, rate }, [copy.buffer]);
  }

  /** No more audio for this utterance: play out the rest (its end is not an underrun). */
  end() {
    this.node.port.postMessage({ type: "end" });
  }

  /** Barge-in: empty the buffer now. Resolves with the frame at which the worklet went silent. */
  cancel() {
    this._active = false;
    const done = this._request("cancel");
    this._resolveDrained();
    return done;
  }

  /** Counters of the current utterance: received/consumed input samples, played output frames,
   * underruns, buffered samples. */
  async stats() {
    return (await this._request("stats")).stats;
  }

  /** Resolves once the utterance has been played out (at once when nothing is playing). */
  drained() {
    if (!this._active) return Promise.resolve();
    return new Promise((resolve) => this._drainWaiters.push(resolve));
  }

  _request(type) {
    const id = ++this._ids;
    return new Promise((resolve) => {
      this._replies.set(id, resolve);
      this.node.port.postMessage({ type, id });
    });
  }

  _resolveDrained() {
    const waiters = this._drainWaiters;
    this._drainWaiters = [];
    waiters.forEach((w) => w());
  }

  _onMessage(m) {
    if (m.id !== undefined && this._replies.has(m.id)) {
      this._replies.get(m.id)(m);
      this._replies.delete(m.id);
    } else if (m.type === "firstsound") {
      // the rendered frame's time, mapped to the page clock through the output timestamp: when
      // that frame reaches the speakers, output latency included
      const ts = this.audioContext.getOutputTimestamp();
      const at = ts.performanceTime + (m.contextTime - ts.contextTime) * 1000;
      this.firstSoundMs = Math.max(0, at - this._t0);
      this.onfirstsound?.(this.firstSoundMs);
    } else if (m.type === "underrun") {
      this.underruns = m.count;
      this.onunderrun?.(m.count);
    } else if (m.type === "position") {
      this.onposition?.(m.seconds);
    } else if (m.type === "drained") {
      this._active = false;
      this._resolveDrained();
    }
  }
}

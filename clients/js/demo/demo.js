// The demo page: type Arabic, pick a voice and a format, speak, stop. Shows time to first sound
// (measured in the page), the server's first-audio latency, underruns, the chunk timeline, and
// highlights each word while it is heard. `window.nutqDemo` exposes speak/stop for the browser tests.

import { NutqClient, listVoices } from "../nutq.js";
import { NutqPlayer } from "../player.js";

const $ = (id) => document.getElementById(id);
const client = new NutqClient(location.origin);
let player = null;
let current = null;  // { ctx, run } of the utterance being spoken

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "status error" : "status";
}

async function init() {
  try {
    await client.connect();
    $("conn").textContent = "connected";
    $("conn").className = "pill ok";
  } catch (e) {
    $("conn").textContent = "offline";
    $("conn").className = "pill bad";
    status(e.message, true);
  }
  try {
    for (const v of await listVoices()) $("voice").append(new Option(v.id, v.id));
  } catch (e) {
    $("voice").append(new Option("default", "default"));
    status(`voices: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------------------ words

function renderWords(text, words, nowS = -1) {
  const box = $("words");
  box.textContent = "";
  let pos = 0;
  for (const w of words) {
    if (w.char_start > pos) box.append(text.slice(pos, w.char_start));
    const span = document.createElement("span");
    span.className = "w" + (nowS >= w.end ? " said" : nowS >= w.start ? " now" : "");
    span.textContent = text.slice(w.char_start, w.char_end);
    box.append(span);
    pos = w.char_end;
  }
  box.append(text.slice(pos));
}

// ------------------------------------------------------------------------------ timeline

function drawTimeline(chunks, firstSoundMs) {
  const c = $("timeline");
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!chunks.length) return;
  const end = Math.max(...chunks.map((k) => k.atMs + k.seconds * 1000), (firstSoundMs ?? 0) + 1);
  const x = (ms) => 10 + (ms / end) * (c.width - 20);
  g.font = "11px system-ui";
  g.fillStyle = "#667";
  g.fillText("arrival (bar: audio it carries)", 10, 12);
  chunks.forEach((k, i) => {
    const y = 20 + (i % 6) * 12;
    g.fillStyle = "#2f6fed";
    g.fillRect(x(k.atMs), y, Math.max(2, x(k.atMs + k.seconds * 1000) - x(k.atMs)), 9);
  });
  if (firstSoundMs !== null) {
    g.strokeStyle = "#1f8a4c";
    g.beginPath(); g.moveTo(x(firstSoundMs), 16); g.lineTo(x(firstSoundMs), 100); g.stroke();
    g.fillStyle = "#1f8a4c";
    g.fillText(`first sound ${firstSoundMs.toFixed(0)} ms`, x(firstSoundMs) + 4, 112);
  }
  g.fillStyle = "#667";
  g.fillText(`${(end / 1000).toFixed(2)} s`, c.width - 50, 112);
}

// ------------------------------------------------------------------------------ speak / stop

/** Speak the textarea's text (or `opts.text`); resolves when it has been played out. `opts.settings`:
 * extra native-protocol settings (seed, max_tokens, ...). */
async function speak(opts = {}) {
  await stop();
  if (opts.text !== undefined) $("text").value = opts.text;
  const text = $("text").value;
  if (!text.trim()) { status("type some text first", true); return null; }
  const jitterMs = opts.jitterMs ?? Number($("jitter").value);
  await ensurePlayer(jitterMs);
  const ctx = client.context(null, { voice: $("voice").value || "default", output_format: $("format").value, ...(opts.settings ?? {}) });
  const run = { text, words: [], chunks: [], bytes: 0, samples: 0, done: null, nowS: -1 };
  current = { ctx, run };
  ["ttfs", "latency", "rtf", "samples"].forEach((id) => { $(id).textContent = "–"; });
  $("underruns").textContent = "0";
  $("chunks").textContent = "0";
  renderWords(text, []);
  player.onfirstsound = (ms) => { $("ttfs").textContent = `${ms.toFixed(0)} ms`; };
  player.onunderrun = (n) => { $("underruns").textContent = String(n); };
  player.onposition = (s) => {
    if (current?.run === run) { run.nowS = s; renderWords(text, run.words, s); }
  };
  status("speaking…");
  const t0 = performance.now();
  player.begin({ rate: ctx.sampleRate, jitterMs });
  try {
    ctx.sendText(text);
    ctx.close();
    for await (const ev of ctx) {
      if (ev.type === "audio") {
        run.bytes += ev.data.length;
        if (ev.samples) {
          run.samples += ev.samples.length;
          player.push(ev.samples, ev.sampleRate);
          run.chunks.push({ atMs: performance.now() - t0, seconds: ev.samples.length / ev.sampleRate, samples: ev.samples.length });
          $("chunks").textContent = String(run.chunks.length);
          drawTimeline(run.chunks, player.firstSoundMs);
        }
      } else if (ev.type === "timestamps") {
        run.words.push(...ev.words);
        renderWords(text, run.words, run.nowS);
      } else if (ev.type === "done") {
        run.done = ev;
        player.end();
      }
    }
  } catch (e) {
    status(e.message, true);
    player.end();
  }
  if (run.done?.reason === "closed") await player.drained();
  const stats = await player.stats();
  if (current?.run === run) current = null;
  const t = run.done?.timings;
  if (t?.first_audio_latency_s != null) $("latency").textContent = `${(t.first_audio_latency_s * 1000).toFixed(0)} ms`;
  if (t?.rtf != null) $("rtf").textContent = t.rtf.toFixed(2);
  $("samples").textContent = `${run.samples} / ${stats.consumed}`;
  $("underruns").textContent = String(stats.underruns);
  drawTimeline(run.chunks, player.firstSoundMs);
  renderWords(text, run.words, run.done?.reason === "closed" ? Infinity : run.nowS);
  if (run.done) status(`${run.done.reason}: ${t.audio_s.toFixed(2)} s of audio, ${t.phrases} phrase(s)`);
  return { reason: run.done?.reason ?? null, timings: t ?? null, bytes: run.bytes, samples: run.samples, chunks: run.chunks,
           words: run.words, firstSoundMs: player.firstSoundMs, stats, outputRate: player.audioContext.sampleRate };
}

async function ensurePlayer(jitterMs = Number($("jitter").value)) {
  player ??= await NutqPlayer.create({ jitterMs });
  return player;
}

/** Barge-in: cancel the context and empty the player at once. */
async function stop() {
  if (!current) return null;
  const { ctx } = current;
  current = null;
  ctx.cancel();
  const cancelled = await player.cancel();
  status("stopped");
  return cancelled;
}

$("speak").addEventListener("click", () => speak());
$("stop").addEventListener("click", () => stop());
const ready = init();
window.nutqDemo = { speak, stop, ready, client, ensurePlayer };

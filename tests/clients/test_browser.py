"""The browser client (clients/js) and the demo page in headless Chromium, against a live
`nutq serve` on loopback: every sample the server sent reaches the AudioWorklet and is played,
no underrun when the jitter buffer covers the stream's pace, cancel silences the output within one
render quantum (checked by an independent probe worklet behind the player), the client's
contexts, flush and reconnection, and a screenshot of the demo page (out/test-artifacts/demo.png,
or in $NUTQ_TEST_ARTIFACTS).

Needs Chromium (`apt-get install chromium`; .ci/run installs it); skipped, saying so, without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.clients.cdp import Browser, find_chromium
from tests.clients.scripted import LATE, TEXT1, TEXT2, Scripted

RATE = 24_000
QUANTUM = 128  # frames per Web Audio render quantum
JITTER_MS = 1000  # the test's jitter buffer: ample for a tiny model on a shared CPU
# $NUTQ_TEST_ARTIFACTS: where .ci/run keeps artifacts (its clone of the repository is temporary)
ARTIFACTS = Path(os.environ.get("NUTQ_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "out" / "test-artifacts")
SENTENCE = "مرحبا بكم في نطق."

# An output probe behind the player: counts the audible frames it sees and the last one's index
# (frames of one render quantum share `currentFrame` across the graph, so indices compare).
PROBE = """
class Probe extends AudioWorkletProcessor {
  constructor() { super(); this.audible = 0; this.last = -1;
    this.port.onmessage = () => this.port.postMessage({ audible: this.audible, last: this.last }); }
  process(inputs, outputs) {
    const x = inputs[0][0];
    if (x) for (let i = 0; i < x.length; i++) if (x[i] !== 0) { this.audible++; this.last = currentFrame + i; }
    return true;
  }
}
registerProcessor("probe", Probe);
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set NUTQ_CHROMIUM): browser tests not run")
    b = Browser(binary, tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    browser.goto(server.url + "/")
    browser.evaluate("window.nutqDemo.ready")
    return browser


def needed_jitter_ms(chunks: list[dict]) -> float:
    """The buffer the stream's pace needed: how far each chunk arrived behind the playback of
    everything before it, had playback started at the first chunk."""
    ahead, worst = 0.0, 0.0
    for k in chunks:
        worst = max(worst, k["atMs"] - chunks[0]["atMs"] - ahead)
        ahead += k["seconds"] * 1000
    return worst


def test_worklet_gets_and_plays_every_sample_without_underruns(page):
    r = page.evaluate(f"""nutqDemo.speak({{ text: {json.dumps(SENTENCE)}, jitterMs: {JITTER_MS},
                                            settings: {{ max_tokens: 50, seed: 2 }} }})""", timeout=120)
    assert r["reason"] == "closed", r
    sent = round(r["timings"]["audio_s"] * RATE)  # what the server counted out
    stats = r["stats"]
    assert r["samples"] == sent == sum(k["samples"] for k in r["chunks"])  # the page decoded every sample
    assert stats["received"] == sent  # ... the worklet got every one of them
    assert stats["consumed"] == sent  # ... and played them all
    assert abs(stats["played"] - sent * r["outputRate"] / RATE) <= 2  # resampled to the context rate
    assert r["firstSoundMs"] is not None and r["firstSoundMs"] > 0
    need = needed_jitter_ms(r["chunks"])
    print(f"chunks {len(r['chunks'])}, jitter needed {need:.0f} ms, underruns {stats['underruns']}, "
          f"time to first sound {r['firstSoundMs']:.0f} ms, server latency {r['timings']['first_audio_latency_s']:.3f} s")
    if need < JITTER_MS - 150:
        assert stats["underruns"] == 0 and stats["underrunFrames"] == 0
    elif need > JITTER_MS + 150:  # this machine synthesised slower than the buffer covers
        assert stats["underruns"] >= 1, "the stream fell behind by more than the buffer, unnoticed"


def test_cancel_silences_the_output_within_one_render_quantum(page):
    r = page.evaluate(f"""(async () => {{
      const player = await nutqDemo.ensurePlayer();
      const ac = player.audioContext;
      if (!window.probe) {{
        await ac.audioWorklet.addModule(URL.createObjectURL(new Blob([{json.dumps(PROBE)}], {{ type: "text/javascript" }})));
        window.probe = new AudioWorkletNode(ac, "probe");
        player.node.disconnect();
        player.node.connect(window.probe);
        window.probe.connect(ac.destination);
      }}
      const read = () => new Promise((res) => {{ probe.port.onmessage = (e) => res(e.data); probe.port.postMessage(0); }});
      const speaking = nutqDemo.speak({{ text: {json.dumps(SENTENCE)}, jitterMs: 400, settings: {{ max_tokens: 300, seed: 1 }} }});
      const deadline = performance.now() + 60000;
      let s;
      do {{ await new Promise((res) => setTimeout(res, 20)); s = await player.stats(); }}
      while (!(s.playing && s.played > 0.1 * ac.sampleRate && s.buffered > 0.05 * s.inputRate) && performance.now() < deadline);
      const before = await read();
      const postFrame = Math.round(ac.currentTime * ac.sampleRate);
      const cancelled = await nutqDemo.stop();
      const result = await speaking;
      await new Promise((res) => setTimeout(res, 300));
      const after = await read();
      return {{ stats: s, before, after, postFrame, cancelled, reason: result.reason }};
    }})()""", timeout=120)
    print(r)
    assert r["stats"]["playing"] and r["before"]["audible"] > 0, "never got to play before the cancel"
    assert r["cancelled"]["dropped"] > 0  # audio was buffered when the cancel came: it was thrown away
    assert r["reason"] == "cancelled"
    # no audible frame after the quantum in which the worklet took the cancel
    assert r["after"]["last"] < r["cancelled"]["frame"] + QUANTUM
    print(f"cancel taken {r['cancelled']['frame'] - r['postFrame']} frames after the page's currentTime at the call")


def test_contexts_incremental_text_and_flush_on_one_socket(page, server):
    r = page.evaluate(f"""(async () => {{
      const {{ NutqClient }} = await import("/client/nutq.js");
      const client = new NutqClient({json.dumps(server.ws)}, {{ max_tokens: 25, seed: 4 }});
      await client.connect();
      const one = async (id) => {{
        const ctx = client.context(id);
        for (const p of ["مرحبا ", "بكم", ". كيف ", "حالك؟"]) ctx.sendText(p);
        ctx.flush();
        ctx.close();
        const seen = {{ samples: 0, flushed: 0, words: [], done: null }};
        for await (const ev of ctx) {{
          if (ev.type === "audio") seen.samples += ev.samples.length;
          else if (ev.type === "flushed") seen.flushed += 1;
          else if (ev.type === "timestamps") seen.words.push(...ev.words);
          else if (ev.type === "done") seen.done = ev;
        }}
        return {{ ...seen, text: ctx.text }};
      }};
      const both = await Promise.all([one("a"), one("b")]);
      let error = null;
      const bad = client.context("bad", {{ voice: "nobody" }});
      bad.sendText("مرحبا.");
      try {{ for await (const _ of bad) {{}} }} catch (e) {{ error = {{ name: e.name, code: e.code, retryable: e.retryable, param: e.param }}; }}
      client.close();
      return {{ both, error }};
    }})()""", timeout=120)
    for seen in r["both"]:
        assert seen["done"]["reason"] == "closed" and seen["flushed"] == 1
        assert seen["samples"] == round(seen["done"]["timings"]["audio_s"] * RATE)
        assert seen["words"] and all(seen["text"][w["char_start"]:w["char_end"]] == w["word"] for w in seen["words"])
    assert r["error"] == {"name": "NutqError", "code": "voice_not_found", "retryable": False, "param": "voice"}


def test_decoder_strips_the_wav_header_and_carries_split_samples(page):
    r = page.evaluate("""(async () => {
      const { PcmDecoder } = await import("/client/nutq.js");
      const samples = [0, 16384, -16384, 32767, -32768, 1];
      const body = new Uint8Array(new Int16Array(samples).buffer);
      const head = new Uint8Array(44); const v = new DataView(head.buffer);
      [..."RIFF"].forEach((c, i) => head[i] = c.charCodeAt(0)); v.setUint32(4, 0xffffffff, true);
      [..."WAVEfmt "].forEach((c, i) => head[8 + i] = c.charCodeAt(0)); v.setUint32(16, 16, true);
      v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, 24000, true); v.setUint32(28, 48000, true);
      v.setUint16(32, 2, true); v.setUint16(34, 16, true);
      [..."data"].forEach((c, i) => head[36 + i] = c.charCodeAt(0)); v.setUint32(40, 0xffffffff, true);
      const all = new Uint8Array(44 + body.length); all.set(head); all.set(body, 44);
      const d = new PcmDecoder("wav");
      const out = [];
      for (const [a, b] of [[0, 30], [30, 47], [47, 50], [50, all.length]]) out.push(...d.decode(all.subarray(a, b)));
      const mu = new PcmDecoder("mulaw").decode(new Uint8Array([0xff, 0x7f, 0x00, 0x80]));
      return { out, mu: [...mu] };
    })()""")
    assert r["out"] == [s / 32768 for s in [0, 16384, -16384, 32767, -32768, 1]]
    assert r["mu"][0] == 0 and r["mu"][1] == 0 and r["mu"][2] < -0.97 and r["mu"][3] > 0.97


@contextmanager
def serving(handler):
    """A websockets server for `handler` on 127.0.0.1, in a thread of its own; yields its port."""
    loop = asyncio.new_event_loop()
    ready, port = threading.Event(), []
    stop = asyncio.Event()

    async def serve_until_stopped():
        from websockets.asyncio.server import serve

        async with serve(handler, "127.0.0.1", 0) as srv:
            port.append(srv.sockets[0].getsockname()[1])
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve_until_stopped()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


@pytest.mark.parametrize("how", ["1012", "draining"])
def test_reconnect_resends_unspoken_text_and_text_given_meanwhile(page, how):
    script = Scripted(how)
    with serving(script.handler) as port:
        r = page.evaluate(f"""(async () => {{
          const {{ NutqClient }} = await import("/client/nutq.js");
          const client = new NutqClient("ws://127.0.0.1:{port}", {{ backoffMs: 50, voice: "v1" }});
          await client.connect();
          const ctx = client.context("t", {{ seed: 5 }});
          ctx.sendText({json.dumps(TEXT1)});
          ctx.sendText({json.dumps(TEXT2)});
          const events = [];
          let late = false;
          for await (const ev of ctx) {{
            events.push({{ type: ev.type, charOffset: ev.charOffset, attempt: ev.attempt, reason: ev.reason }});
            if (ev.type === "timestamps" && !late) {{
              late = true;
              await new Promise((res) => setTimeout(res, 50));
              ctx.sendText({json.dumps(LATE)});  // while the connection goes down
              ctx.close();
            }}
          }}
          client.close();
          return {{ events, reconnects: client.reconnects }};
        }})()""", timeout=60)
    assert r["reconnects"] == 1 and len(script.connections) == 2
    replay = script.connections[1]
    assert replay[0] == {"type": "config", "voice": "v1"}
    assert replay[1] == {"type": "config", "context_id": "t", "seed": 5}
    assert "".join(m["text"] for m in replay if m["type"] == "text") == (TEXT1 + TEXT2 + LATE)[5:]
    assert replay[-1] == {"type": "close_context", "context_id": "t"}
    types = [e["type"] for e in r["events"]]
    assert types[:2] == ["audio", "timestamps"] and types[-1] == "done" and r["events"][-1]["reason"] == "closed"
    assert {"type": "resumed", "charOffset": 5, "attempt": 1} in r["events"]  # (JSON drops undefined fields)


def test_reconnect_gives_up_on_a_server_that_keeps_dropping(page):
    connections = []

    async def drop(ws):
        connections.append(ws)
        await ws.recv()
        await ws.close(1013)

    with serving(drop) as port:
        r = page.evaluate(f"""(async () => {{
          const {{ NutqClient }} = await import("/client/nutq.js");
          const client = new NutqClient("ws://127.0.0.1:{port}", {{ maxRetries: 3, backoffMs: 10 }});
          await client.connect();
          const ctx = client.context();
          ctx.sendText("مرحبا.");
          try {{ for await (const _ of ctx) {{}} }} catch (e) {{ return {{ code: e.code, closeCode: e.closeCode,
                                                                    retryable: e.retryable, reconnects: client.reconnects }}; }}
          return null;
        }})()""", timeout=60)
    assert r == {"code": "connection_closed", "closeCode": 1013, "retryable": True, "reconnects": 3}
    assert len(connections) == 4


def test_demo_page_ui_highlights_words_and_screenshot(page):
    page.evaluate("document.getElementById('jitter').value = 300")
    page.evaluate(f"""void (window.demoRun = nutqDemo.speak({{ text: {json.dumps(SENTENCE + " كيف حالك؟")},
                                                               settings: {{ max_tokens: 40, seed: 7 }} }}))""")
    # a word lights up while it is heard: caught (and photographed) during playback
    highlighted = page.evaluate("""new Promise((res) => { const t0 = performance.now(); const tick = () =>
      document.querySelector("#words span.now") ? res(true) : performance.now() - t0 > 60000 ? res(false)
      : setTimeout(tick, 5); tick(); })""", timeout=70)
    shot = page.screenshot(ARTIFACTS / "demo.png")
    page.evaluate("window.demoRun", timeout=120)
    r = page.evaluate("""({ dir: getComputedStyle(document.getElementById("text")).direction,
      words: document.querySelectorAll("#words span.w").length, chunks: Number(document.getElementById("chunks").textContent),
      ttfs: document.getElementById("ttfs").textContent, voices: document.getElementById("voice").options.length,
      status: document.getElementById("status").textContent })""")
    assert highlighted, "no word was highlighted during playback"
    assert r["dir"] == "rtl" and r["voices"] >= 1
    assert r["words"] >= 2 and r["chunks"] >= 1 and r["ttfs"].endswith("ms"), r
    assert r["status"].startswith("closed"), r
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

"""Bounded adversarial run: slow readers, decompression bombs, big bodies and overflowing text
against a real `nutq serve` on loopback, while a well-behaved client keeps asking for speech.

    python benchmarks/adversarial.py [--duration 120] [--only slow_http,bomb,...] [--model-dir DIR]
        [--out benchmarks/results/adversarial_cpu_tiny.json]

Starts `nutq serve` as a subprocess on 127.0.0.1 only (a tiny random checkpoint made in a temporary
directory unless --model-dir is given), with two API keys, one for the attackers and one for the
well-behaved client, --max-streams-per-key 1 (what keeps slots and CPU for others: the attacker's
admitted streams are real streams) and --send-timeout 5. Then:

1. baseline: the well-behaved request (OpenAI, pcm, 12 speech tokens) 5 times alone, then 5 times
   while another client runs one long stream that it reads (normal load: the attacker's key is
   allowed one stream, and an admitted stream costs CPU whoever reads it);
2. for --duration seconds, attacker threads repeat their attack (0.5 s apart) while the well-behaved client
   repeats its request every 0.5 s (status and latency of each):
   - slow readers: 4 HTTP streams and 2 native WebSockets with 2 contexts each, on sockets with a
     1-byte receive buffer that are never read (each held 110 s, then again);
   - bombs: the 343 KB FLAC of 8 channels at 655,350 Hz (60 s) and a 2-channel 192 kHz 60 s FLAC,
     uploaded to /v1/voices by 2 threads;
   - big bodies: unauthenticated POSTs declaring 200 MB and authenticated chunked bodies to
     /v1/speak, each sending up to 20 MB as fast as the server takes it;
   - overflowing text: "ﷺ" * 250 (4,504 text tokens) to /v1/audio/speech, 2 speech tokens per phrase;
3. the attackers stop; after 5 s of calm the RSS is read again.

The server's RSS (Linux /proc) is read before, sampled every 20 ms for the peak, and after. The run
passes when every well-behaved request got its audio (200), its p95 latency stayed within
--latency-factor times the loaded baseline p50, and the peak RSS stayed within --rss-bound-mb of the
baseline. Every wait has a timeout and the server is stopped at the end: the run stops by itself.
Writes JSON to --out and exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from load_ws import RssSampler, Server, pct, rss_mb

ATTACKER, GOOD = "attacker-key", "good-key"
SEND_TIMEOUT_S = 5.0
LONG = "هذا نص طويل جدا بلا أي علامة ترقيم يستمر ويستمر حتى النهاية البعيدة"
PAUSE_S = 0.5  # between two attempts of one attacker thread
# A stalled socket is held this long: the server's kernel send buffer (autotuned to megabytes on
# loopback) must fill before its sends block and the send timeout can run.
HOLD_S = 110.0
# Four phrases of up to 1000 tokens each: more audio than those buffers hold.
SLOW_TEXT = ". ".join([LONG] * 4) + "."
MB = 1 << 20


def silent_flac(rate: int, channels: int, seconds: int) -> bytes:
    """Silence compresses to almost nothing: a small file that decodes to a huge array."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((rate, channels), dtype=np.int16)
        for _ in range(seconds):
            f.write(block)
    return buf.getvalue()


def open_socket(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def head(method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


def status_of(sock: socket.socket) -> str:
    """The response status, or what happened instead."""
    try:
        data = sock.recv(4096)
        return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
    except OSError as e:
        return type(e).__name__


def ws_frame(text: str) -> bytes:
    data, mask = text.encode(), b"\x01\x02\x03\x04"
    n = len(data)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def speech(text: str, tokens: int, **extra) -> bytes:
    return json.dumps({"model": "nutq", "input": text, "voice": "default", "response_format": "pcm",
                       "max_tokens": tokens, **extra}).encode()


class Attacks:
    """The attacker threads; `outcomes[attack]` counts what each attempt got."""

    def __init__(self, port: int, stop: threading.Event):
        self.port, self.stop = port, stop
        self.outcomes: dict[str, Counter] = {}
        self.bombs = {"flac_8ch_655350hz_60s": silent_flac(655_350, 8, 60),
                      "flac_2ch_192khz_60s": silent_flac(192_000, 2, 60)}
        self.lock = threading.Lock()

    def count(self, attack: str, outcome: str) -> None:
        with self.lock:
            self.outcomes.setdefault(attack, Counter())[outcome] += 1

    def loop(self, attack: str, once) -> None:
        """`once` again and again, PAUSE_S apart: a steady attack, not a flood (no per-request
        limit can keep a server on two cores responsive under a flood of cheap requests)."""
        while not self.stop.is_set():
            try:
                self.count(attack, once())
            except OSError as e:
                self.count(attack, type(e).__name__)
            self.stop.wait(PAUSE_S)

    def slow_http(self) -> str:
        body = speech(SLOW_TEXT, 1000, sample_rate=48_000)  # twice the bytes: the buffers fill sooner
        with open_socket(self.port, rcvbuf=1) as s:
            s.sendall(head("POST", "/v1/audio/speech", {"Authorization": f"Bearer {ATTACKER}",
                                                        "Content-Type": "application/json",
                                                        "Content-Length": len(body)}) + body)
            self.stop.wait(HOLD_S)  # never read
        return "held"

    def slow_ws(self) -> str:
        with open_socket(self.port, rcvbuf=1) as s:
            s.sendall(head("GET", "/v1/tts/ws", {"Authorization": f"Bearer {ATTACKER}", "Upgrade": "websocket",
                                                 "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
            for cid in ("a", "b"):
                for m in ({"type": "config", "context_id": cid, "max_tokens": 1000, "output_format": "pcm_f32le",
                           "sample_rate": 48_000},
                          {"type": "text", "context_id": cid, "text": SLOW_TEXT},
                          {"type": "flush", "context_id": cid}):
                    s.sendall(ws_frame(json.dumps(m)))
            self.stop.wait(HOLD_S)
        return "held"

    def bomb(self, name: str) -> str:
        data = self.bombs[name]
        boundary = "bombboundary"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.flac"\r\n\r\n'.encode()
                + data + f"\r\n--{boundary}--\r\n".encode())
        with open_socket(self.port) as s:
            s.sendall(head("POST", "/v1/voices", {"Authorization": f"Bearer {ATTACKER}", "Content-Length": len(body),
                                                  "Content-Type": f"multipart/form-data; boundary={boundary}"}) + body)
            return status_of(s)

    def big_body(self, chunked: bool) -> str:
        piece = b"x" * MB
        with open_socket(self.port) as s:
            if chunked:
                s.sendall(head("POST", "/v1/speak", {"Authorization": f"Bearer {ATTACKER}",
                                                     "Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
            else:
                s.sendall(head("POST", "/v1/audio/speech", {"Content-Type": "application/json",
                                                            "Content-Length": 200 * MB}))
            try:
                for _ in range(20):
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except OSError:
                pass  # refused and closed while sending: the answer may still be readable
            return status_of(s)

    def overflow(self) -> str:
        body = speech("ﷺ" * 250, 2)
        with open_socket(self.port) as s:
            s.sendall(head("POST", "/v1/audio/speech", {"Authorization": f"Bearer {ATTACKER}",
                                                        "Content-Type": "application/json", "Content-Length": len(body),
                                                        "Connection": "close"}) + body)
            status = status_of(s)
            while s.recv(65536):
                pass
            return status

    def threads(self, only: set[str] | None = None) -> list[threading.Thread]:
        jobs = [("slow_http", self.slow_http)] * 4 + [("slow_ws", self.slow_ws)] * 2 + [
            (f"bomb_{name}", lambda n=name: self.bomb(n)) for name in self.bombs] + [
            ("big_body_declared_unauthenticated", lambda: self.big_body(False)),
            ("big_body_chunked", lambda: self.big_body(True)), ("overflow_text", self.overflow)]
        return [threading.Thread(target=self.loop, args=job, daemon=True) for job in jobs
                if only is None or any(job[0].startswith(o) for o in only)]


def background_stream(port: int, stop: threading.Event) -> None:
    """A well-behaved long stream with the attacker's key, read to the end, again and again: the
    load of one client using its share (one stream), for the baseline."""
    import http.client

    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/audio/speech", speech(LONG, 1000, sample_rate=48_000),
                     {"Authorization": f"Bearer {ATTACKER}", "Content-Type": "application/json"})
        r = conn.getresponse()
        while not stop.is_set() and r.read(65536):
            pass
        conn.close()


def good_request(port: int) -> tuple[int | None, float]:
    import http.client

    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/audio/speech", speech("مرحبا بكم", 12),
                     {"Authorization": f"Bearer {GOOD}", "Content-Type": "application/json"})
        r = conn.getresponse()
        audio = r.read()
        conn.close()
        status = None if r.status == 200 and not audio else r.status  # a 200 without audio is a failure
    except OSError:
        status = None
    return status, 1e3 * (time.perf_counter() - t0)


def metrics(port: int) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    wanted = ("nutq_slow_consumers_total", "nutq_errors_total", "nutq_streams_total")
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith(wanted)}


def run(model_dir: str, duration: float, workdir: Path, latency_factor: float, rss_bound_mb: float,
        only: set[str] | None = None) -> dict:
    server = Server(model_dir, 4, workdir / "serve.log", malloc_arena_max=2,
                    extra=("--api-key", ATTACKER, "--api-key", GOOD, "--send-timeout", str(SEND_TIMEOUT_S),
                           "--max-streams-per-key", "1"))
    port = server.port
    doc: dict = {"duration_s": duration, "send_timeout_s": SEND_TIMEOUT_S, "attacks_run": sorted(only or ["all"]),
                 "problems": []}
    try:
        alone = [good_request(port) for _ in range(5)]
        loaded = threading.Event()
        background = threading.Thread(target=background_stream, args=(port, loaded), daemon=True)
        background.start()
        time.sleep(1.0)
        baseline = [good_request(port) for _ in range(5)]
        loaded.set()
        background.join(timeout=60)
        doc["alone_ms"] = {"p50": pct([ms for _, ms in alone], 50)}
        doc["baseline_ms"] = {"p50": pct([ms for _, ms in baseline], 50), "statuses": [s for s, _ in baseline],
                              "load": "one other client's long stream (read), its share of one stream"}
        rss_before = rss_mb(server.proc.pid)
        stop = threading.Event()
        attacks = Attacks(port, stop)
        good: list[tuple[int | None, float]] = []
        with RssSampler(server.proc.pid) as sampler:
            threads = attacks.threads(only)
            for t in threads:
                t.start()
            t_end = time.monotonic() + duration
            while time.monotonic() < t_end:
                good.append(good_request(port))
                time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            time.sleep(5.0)
        doc["rss_mb"] = {"before": round(rss_before, 1), "peak": round(sampler.peak, 1),
                         "after": round(rss_mb(server.proc.pid), 1)}
        latencies = [ms for status, ms in good if status == 200]
        doc["good_client"] = {"requests": len(good), "statuses": dict(Counter(str(s) for s, _ in good)),
                              "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
                              "max_ms": round(max(latencies), 1) if latencies else None}
        doc["attacks"] = {k: dict(v) for k, v in sorted(attacks.outcomes.items())}
        doc["server_metrics"] = metrics(port)
        if any(s != 200 for s, _ in good):
            doc["problems"].append("a well-behaved request did not get its audio")
        base = doc["baseline_ms"]["p50"]
        if latencies and base and doc["good_client"]["p95_ms"] > latency_factor * base:
            doc["problems"].append(f"good p95 {doc['good_client']['p95_ms']} ms > {latency_factor} x baseline {base} ms")
        if doc["rss_mb"]["peak"] - rss_before > rss_bound_mb:
            doc["problems"].append(f"peak RSS {doc['rss_mb']['peak']} MB > {rss_bound_mb} MB above {rss_before:.0f}")
    finally:
        doc["server_exit_code"] = server.stop()
    doc["ok"] = not doc["problems"]
    doc["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                      "cpus": len(os.sched_getaffinity(0))}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of attacks")
    ap.add_argument("--latency-factor", type=float, default=2.0,
                    help="the well-behaved p95 may be at most this many times its baseline p50")
    ap.add_argument("--rss-bound-mb", type=float, default=500.0, help="peak RSS above the warm baseline allowed")
    ap.add_argument("--only", help="comma-separated attack name prefixes (slow_http, slow_ws, bomb, big_body, "
                                   "overflow_text); default: all")
    ap.add_argument("--model-dir", help="checkpoint directory (default: a tiny random one made here)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "adversarial_cpu_tiny.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nutq-adversarial-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from nutq.checkpoints.make import make_checkpoint

            model_dir = str(make_checkpoint(Path(tmp) / "tiny", size="tiny", seed=0).root)
        only = set(args.only.split(",")) if args.only else None
        doc = run(model_dir, args.duration, Path(tmp), args.latency_factor, args.rss_bound_mb, only)
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(doc, indent=1, ensure_ascii=False))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

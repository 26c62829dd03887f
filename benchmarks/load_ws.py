"""Bounded load test: N concurrent WebSocket streams against a real `nutq serve` on loopback.

    python benchmarks/load_ws.py [--streams 16] [--tokens 40] [--rounds 3] [--model-dir DIR]
        [--out benchmarks/results/load_ws.json]

Starts `nutq serve` as a subprocess on 127.0.0.1 only (a tiny random checkpoint made in a
temporary directory unless --model-dir is given) with --max-sessions N, and speaks over the seed
protocol (`WS /ws/tts`, pcm s16le 24 kHz):

1. references: each of the N requests (its own sentence and seed) alone, one after another;
2. rounds: all N at once, one client thread and socket each, released together. Every stream must
   complete without an error and its audio must equal its reference byte for byte: a stream that
   received another's audio, or lost some of its own, fails;
3. memory: the server's RSS (Linux /proc) after the references (baseline, warm), its peak sampled
   every 20 ms during the rounds, and after each round once idle. After the last round it must be
   within --rss-tolerance-mb of the baseline (freed sessions, no per-stream leak).

The server runs with MALLOC_ARENA_MAX=2 (--malloc-arena-max; 0 keeps glibc's default), the setting
recommended for `nutq serve` in production: glibc gives each thread that allocates its own arena
(up to 8 per core) and keeps freed memory in them, so with the default the RSS after a burst of
16 stream threads stays ~140 MB above the baseline without growing from round to round: retention,
not a leak, but indistinguishable from one by RSS.

Every wait has a timeout and the server is stopped at the end (SIGTERM, then kill): the run stops by
itself. Writes JSON to --out and exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from websockets.sync.client import connect

from nutq.bench.concurrency import SENTENCES  # the same sentences as the concurrency benchmark
from nutq.rates import SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * 2  # pcm s16le mono at 24 kHz
SETTLE_S = 1.0  # after a round, before reading RSS: the workers and sockets wind down


def request(i: int, tokens: int) -> dict:
    """Stream i's request: its own sentence and seed, so any two streams' audio differ."""
    return {"text": SENTENCES[i % len(SENTENCES)], "language_id": "ar", "speaker_id": "default", "seed": 1000 + i,
            "max_tokens": tokens}


@dataclass
class StreamResult:
    audio: bytes = b""
    error: str | None = None
    ttfa_ms: float | None = None  # request sent -> first audio frame, at the client
    total_ms: float | None = None
    server_latency_ms: float | None = None  # the "complete" message's latency_ms
    frames: int = 0


def speak(ws_url: str, req: dict, start: threading.Barrier | None = None, timeout: float = 120.0) -> StreamResult:
    """One request on its own socket; never raises (the error is in the result)."""
    res = StreamResult()
    audio = bytearray()
    try:
        with connect(ws_url, max_size=None, open_timeout=timeout, close_timeout=5) as ws:
            if start is not None:
                start.wait(timeout)
            t0 = time.perf_counter()
            ws.send(json.dumps(req, ensure_ascii=False))
            while True:
                msg = ws.recv(timeout=timeout)
                if isinstance(msg, bytes):
                    if res.ttfa_ms is None:
                        res.ttfa_ms = 1e3 * (time.perf_counter() - t0)
                    audio += msg
                    res.frames += 1
                    continue
                doc = json.loads(msg)
                if doc.get("status") == "complete":
                    res.total_ms = 1e3 * (time.perf_counter() - t0)
                    res.server_latency_ms = doc.get("latency_ms")
                    break
                res.error = f"server error: {doc}"
                break
    except Exception as e:  # noqa: BLE001 - reported per stream, the run goes on
        res.error = f"{type(e).__name__}: {e}"
    res.audio = bytes(audio)
    return res


def run_concurrent(ws_url: str, reqs: list[dict], timeout: float = 120.0) -> list[StreamResult]:
    """All requests at once, each on its own socket and thread, released together."""
    start = threading.Barrier(len(reqs))
    with ThreadPoolExecutor(len(reqs)) as pool:
        return list(pool.map(lambda r: speak(ws_url, r, start, timeout), reqs))


def check_round(results: list[StreamResult], references: list[bytes]) -> list[str]:
    """Problems of one round: errors, and streams whose audio is not their reference's."""
    problems = []
    for i, (res, ref) in enumerate(zip(results, references)):
        if res.error:
            problems.append(f"stream {i}: {res.error}")
        elif res.audio != ref:
            other = next((j for j, r in enumerate(references) if j != i and r == res.audio), None)
            why = f"it is stream {other}'s audio" if other is not None else \
                f"{len(res.audio)} bytes vs {len(ref)} expected"
            problems.append(f"stream {i}: audio differs from the same request alone ({why})")
    return problems


# --- the server process --------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


class RssSampler:
    """Peak RSS of a process, sampled from a thread while the `with` block runs."""

    def __init__(self, pid: int, every_s: float = 0.02):
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`nutq serve` on 127.0.0.1:<free port>, stopped on exit."""

    def __init__(self, model_dir: str, sessions: int, log_path: Path, malloc_arena_max: int,
                 ready_timeout: float = 120.0, extra: tuple[str, ...] = ()):
        """`extra`: more `nutq serve` arguments (later ones override earlier ones)."""
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "nutq.cli", "serve", "--model-dir", model_dir, "--host", "127.0.0.1",
               "--port", str(self.port), "--max-sessions", str(sessions), "--max-streams-per-key", str(sessions),
               "--log-level", "warning", *extra]
        self._log = open(log_path, "wb")
        env = {"OMP_NUM_THREADS": "1", **os.environ}
        if malloc_arena_max > 0:
            env["MALLOC_ARENA_MAX"] = str(malloc_arena_max)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nutq serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nutq serve not ready within {timeout} s")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# --- the run -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))], 1)


@dataclass
class Report:
    streams: int
    tokens: int
    rounds: int
    malloc_arena_max: int
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    round_wall_s: list[float] = field(default_factory=list)
    ttfa_ms: dict = field(default_factory=dict)
    server_ttfa_ms: dict = field(default_factory=dict)
    stream_audio_s: dict = field(default_factory=dict)
    rss_mb: dict = field(default_factory=dict)
    server_exit_code: int | None = None
    machine: dict = field(default_factory=dict)


def run(model_dir: str, streams: int, tokens: int, rounds: int, rss_tolerance_mb: float, workdir: Path,
        malloc_arena_max: int = 2) -> Report:
    rep = Report(streams, tokens, rounds, malloc_arena_max,
                 machine={"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()})
    reqs = [request(i, tokens) for i in range(streams)]
    server = Server(model_dir, streams, workdir / "server.log", malloc_arena_max)
    try:
        url = f"{server.url}/ws/tts"
        alone = [speak(url, r) for r in reqs]
        rep.problems += [f"reference {i}: {r.error}" for i, r in enumerate(alone) if r.error]
        refs = [r.audio for r in alone]
        if len(set(refs)) < len(refs):
            rep.problems.append("two requests gave the same audio: mixing could not be detected")
        baseline = rss_mb(server.proc.pid)
        ttfa, server_ttfa, after_rounds = [], [], []
        with RssSampler(server.proc.pid) as sampler:
            for _ in range(rounds):
                t0 = time.perf_counter()
                results = run_concurrent(url, reqs)
                rep.round_wall_s.append(round(time.perf_counter() - t0, 2))
                rep.problems += check_round(results, refs)
                ttfa += [r.ttfa_ms for r in results]
                server_ttfa += [r.server_latency_ms for r in results]
                time.sleep(SETTLE_S)
                after_rounds.append(round(rss_mb(server.proc.pid), 1))
        after = after_rounds[-1]
        rep.rss_mb = {"baseline": round(baseline, 1), "peak": round(sampler.peak, 1), "after_each_round": after_rounds,
                      "after_minus_baseline": round(after - baseline, 1), "tolerance": rss_tolerance_mb}
        if after - baseline > rss_tolerance_mb:
            rep.problems.append(f"server RSS {after:.0f} MB after the rounds, {after - baseline:.0f} MB above the "
                                f"warm baseline (tolerance {rss_tolerance_mb:g} MB)")
        rep.ttfa_ms = {"p50": pct(ttfa, 50), "p95": pct(ttfa, 95), "max": pct(ttfa, 100)}
        rep.server_ttfa_ms = {"p50": pct(server_ttfa, 50), "p95": pct(server_ttfa, 95)}
        seconds = [len(r) / BYTES_PER_SECOND for r in refs]
        rep.stream_audio_s = {"min": round(min(seconds), 2), "median": round(statistics.median(seconds), 2),
                              "max": round(max(seconds), 2)}
    finally:
        rep.server_exit_code = server.stop()
    if rep.server_exit_code != 0:
        rep.problems.append(f"the server exited with {rep.server_exit_code} on SIGTERM")
    rep.ok = not rep.problems
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=40, help="speech tokens per stream (25 per second of audio)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-tolerance-mb", type=float, default=64.0)
    ap.add_argument("--malloc-arena-max", type=int, default=2, help="the server's MALLOC_ARENA_MAX (0: glibc default)")
    ap.add_argument("--model-dir", help="checkpoint directory (default: a tiny random one made here)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "load_ws.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nutq-load-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from nutq.checkpoints.make import make_checkpoint

            model_dir = str(make_checkpoint(Path(tmp) / "tiny", size="tiny", seed=0).root)
        rep = run(model_dir, args.streams, args.tokens, args.rounds, args.rss_tolerance_mb, Path(tmp),
                  args.malloc_arena_max)
    doc = {"benchmark": "load_ws", "model": "tiny (random)" if args.model_dir is None else args.model_dir,
           **asdict(rep)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(doc, indent=1, ensure_ascii=False))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus metrics of one app (its own registry: two apps in a process never share counters).

    nutq_time_to_first_audio_seconds   request received -> first audio ready, by protocol
    nutq_real_time_factor              synthesis wall time / audio duration, per finished stream
    nutq_active_streams                syntheses running now
    nutq_queue_wait_seconds            per phrase: waiting in the scheduler's queue for a KV slot
    nutq_tokens_per_second             T3 decode rate of each finished stream
    nutq_alignment_guard_interventions_total   guard decisions that changed the output, by kind
    nutq_streams_total                 finished streams by protocol and outcome
    nutq_errors_total                  errors answered to clients, by code
    nutq_slow_consumers_total          streams cancelled because their client stopped reading, by
                                       transport (http, websocket)
    nutq_engine_*                      the batching scheduler's state, read at scrape time (see
                                       `watch_engine`): queued and active sessions, vocoder
                                       backlog, steps, tokens, mean batch size, admissions
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
_RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10)
_RATE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.ttfa = Histogram("nutq_time_to_first_audio_seconds", "Request received to first audio ready",
                              ["protocol"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram("nutq_real_time_factor", "Synthesis wall time over audio duration",
                             buckets=_RTF_BUCKETS, registry=r)
        self.active = Gauge("nutq_active_streams", "Syntheses running now", registry=r)
        self.queue_wait = Histogram("nutq_queue_wait_seconds", "Wait for a KV slot in the scheduler's queue",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens_per_s = Histogram("nutq_tokens_per_second", "T3 decode rate per stream",
                                      buckets=_RATE_BUCKETS, registry=r)
        self.guard = Counter("nutq_alignment_guard_interventions", "Alignment guard decisions, by kind",
                             ["kind"], registry=r)
        self.streams = Counter("nutq_streams", "Finished streams", ["protocol", "outcome"], registry=r)
        self.errors = Counter("nutq_errors", "Errors answered to clients, by code", ["code"], registry=r)
        self.slow_consumers = Counter("nutq_slow_consumers", "Streams cancelled: the client stopped reading",
                                      ["transport"], registry=r)

    def watch_engine(self, stats: Callable[[], object | None]) -> None:
        """Export the scheduler's `SchedulerStats` (from `stats()`, None while none runs) at every scrape."""
        self.registry.register(_EngineCollector(stats))

    def error(self, err) -> None:
        """Count an `ApiError` answered to a client, once however many layers see it."""
        if not getattr(err, "counted", False):
            err.counted = True
            self.errors.labels(err.code or "unknown").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """Reads a snapshot when scraped: the scheduler keeps its own counts, nothing is copied per step."""

    _GAUGES = (("queued", "Sessions waiting for a KV slot"), ("active", "Sessions decoding"),
               ("vocoder_backlog", "Sessions with vocoder work waiting"),
               ("mean_batch", "Mean sessions per decode step since start"),
               ("mean_queue_wait_s", "Mean wait for a KV slot since start, seconds"),
               ("spec_acceptance_rate", "Speculative decoding: share of the drafted tokens the target judged that it "
                                        "accepted (per-token acceptance), since start"),
               ("spec_tokens_per_forward", "Speculative decoding: tokens emitted per target forward, since start"))
    _COUNTERS = (("steps", "Batched decode steps"), ("tokens", "Speech tokens drawn"),
                 ("admitted", "Sessions admitted"), ("rejected", "Sessions refused: queue full"),
                 ("spec_rounds", "Speculative rounds (one target forward verifying a draft each)"),
                 ("spec_drafted", "Tokens proposed by the draft"),
                 ("spec_tested", "Drafted tokens the target judged (up to each round's first rejection)"),
                 ("spec_accepted", "Drafted tokens accepted"),
                 ("spec_emitted", "Tokens emitted by speculative rounds"))

    def __init__(self, stats: Callable[[], object | None]):
        self._stats = stats

    def describe(self):
        return []  # collected lazily: nothing to check at registration

    def collect(self):
        st = self._stats()
        if st is None:
            return
        for name, doc in self._GAUGES:
            yield GaugeMetricFamily(f"nutq_engine_{name}", doc, value=float(getattr(st, name)))
        for name, doc in self._COUNTERS:
            yield CounterMetricFamily(f"nutq_engine_{name}", doc, value=float(getattr(st, name)))

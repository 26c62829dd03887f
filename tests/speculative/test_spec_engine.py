"""Speculative decoding switched on through the engine: `EngineConfig(draft=...)`, `nutq serve
--draft`, the stream it produces, and the counters on /metrics."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from nutq.cli_args import add_speculative_arguments, speculative_from_args
from nutq.engine.config import EngineConfig
from nutq.engine.chunking import ChunkSchedule
from nutq.engine.draft import DraftT3, save_draft, target_sample
from nutq.engine.sampling import SamplingParams
from nutq.errors import ClientError, WeightLoadError
from nutq.tts import TTS

from tests.oracle import plain_stream

TEXT = "مرحبا بكم. هذا نص قصير؟"
SCHEDULE = ChunkSchedule(first=3, max_size=6)


@pytest.fixture(scope="module")
def spec_tts(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=2, max_cache_len=160, draft="target", spec_k=3)
    yield tts
    tts.close()


def test_a_speculative_stream_equals_the_plain_stream(spec_tts):
    """draft = target: every draft is accepted and the draws line up, so the stream (chunks, guard
    positions, audio) is the plain reference loop's, draw for draw."""
    params = SamplingParams(max_new_tokens=20)
    want = list(plain_stream(spec_tts, TEXT, params=params, seed=4, schedule=SCHEDULE))
    got = list(spec_tts.stream(TEXT, params=params, seed=4, schedule=SCHEDULE))
    assert [(c.index, c.phrase_index, c.text_position, c.is_final) for c in got] == \
        [(c.index, c.phrase_index, c.text_position, c.is_final) for c in want]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(got, want))
    st = spec_tts.engine.stats()
    assert st.spec_rounds > 0 and st.spec_acceptance_rate == 1.0 and st.spec_tokens_per_forward > 1.5
    assert spec_tts.pool.in_use == 0


def test_a_trained_draft_file_is_loaded_strictly(tiny_checkpoint, tmp_path):
    plain = TTS.from_local(tiny_checkpoint)
    path = save_draft(DraftT3(plain.t3), tmp_path / "draft.safetensors", target=target_sample(plain.t3))
    tts = TTS.from_local(tiny_checkpoint, draft=path)
    assert isinstance(tts.engine.speculative.draft, DraftT3) and tts.engine.speculative.k == 4
    # trained in fp32, served with T3 in bf16 (the CUDA default): the same target, the draft cast to it
    half = TTS.from_local(tiny_checkpoint, dtype="bf16", draft=path)
    assert half.engine.speculative.draft.tfmr.norm.weight.dtype == torch.bfloat16
    other = tmp_path / "other.safetensors"
    foreign = DraftT3(plain.t3)
    save_draft(foreign, other, target={**target_sample(plain.t3), "speech_head.weight": [1.0] * 32})
    with pytest.raises(WeightLoadError, match="other T3 weights: speech_head.weight differs"):
        TTS.from_local(tiny_checkpoint, draft=other)
    with pytest.raises(WeightLoadError, match="no draft file"):
        TTS.from_local(tiny_checkpoint, draft=tmp_path / "missing.safetensors")
    with pytest.raises(ClientError, match="shortcut:N"):
        TTS.from_local(tiny_checkpoint, draft="shortcut:99")


@pytest.mark.parametrize("kw", [dict(spec_k=0), dict(spec_k=17), dict(spec_max_batch=0), dict(spec_tolerance=1.0),
                                dict(spec_tolerance=-0.1)])
def test_bad_speculative_settings_are_refused_before_loading(kw):
    with pytest.raises(ClientError, match="speculative decoding"):
        EngineConfig(draft="target", **kw)


def test_the_command_line_flags_reach_the_engine_config():
    p = argparse.ArgumentParser()
    add_speculative_arguments(p)
    cfg = EngineConfig(**speculative_from_args(p.parse_args(["--draft", "shortcut:2", "--spec-k", "6",
                                                             "--spec-max-batch", "3"])))
    assert (cfg.draft, cfg.spec_k, cfg.spec_max_batch, cfg.spec_tolerance) == ("shortcut:2", 6, 3, 0.0)
    assert EngineConfig(**speculative_from_args(p.parse_args([]))).draft is None  # off by default


def test_metrics_count_speculative_rounds(spec_tts):
    pytest.importorskip("fastapi")
    from prometheus_client.parser import text_string_to_metric_families

    from nutq.serve.app import create_app
    from nutq.serve.config import ServeConfig
    from tests.serve.helpers import http_request, running_server

    def scrape(url):
        _, _, body = http_request(url, "GET", "/metrics")
        return {s.name: s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}

    with running_server(create_app(spec_tts, ServeConfig(warmup=False))) as url:
        before = scrape(url)
        body = {"model": "nutq", "input": "مرحبا بكم", "voice": "default", "response_format": "pcm",
                "max_tokens": 12, "seed": 1}
        status, _, raw = http_request(url, "POST", "/v1/audio/speech", json.dumps(body),
                                      {"Content-Type": "application/json"})
        assert status == 200 and raw
        after = scrape(url)
    assert after["nutq_engine_spec_rounds_total"] > before.get("nutq_engine_spec_rounds_total", 0.0)
    assert after["nutq_engine_spec_drafted_total"] >= after["nutq_engine_spec_tested_total"] > 0
    assert after["nutq_engine_spec_acceptance_rate"] == 1.0
    assert after["nutq_engine_spec_tokens_per_forward"] > 1.0

"""Choosing the flow decoder: `FlowOptions`, the meanflow file (local, missing, downloaded), `TTS` and
the CLI flags. Parity of the decoders themselves is in test_meanflow.py; streaming in
test_token2wav.py / test_vocoder_batch.py (both decoders)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from nutq.checkpoints import files
from nutq.checkpoints.make import make_checkpoint
from nutq.cli import build_parser
from nutq.engine.chunking import CFM_SCHEDULE, MEANFLOW_SCHEDULE
from nutq.engine.flow_options import FlowOptions, parse_flow
from nutq.engine.sampling import SamplingParams
from nutq.engine.voice import VoiceError
from nutq.errors import CheckpointError
from nutq.models.s3gen.cfm import EulerCFG, MeanFlowEuler
from nutq.tts import TTS

from tests.oracle import plain_stream

P = SamplingParams(max_new_tokens=20, ignore_eos=True)


# ---- FlowOptions ------------------------------------------------------------------------------

def test_defaults_per_decoder():
    assert FlowOptions().solver() == EulerCFG(10, 0.7)
    assert FlowOptions("meanflow").solver() == MeanFlowEuler(2)
    assert FlowOptions("cfm", cfg_rate=0).solver() == EulerCFG(10, 0.0)
    assert FlowOptions("meanflow", steps=1).solver() == MeanFlowEuler(1)
    assert [FlowOptions(*a).label for a in [("cfm",), ("cfm", None, 0.0), ("meanflow",), ("meanflow", 1)]] == \
        ["cfm-10", "cfm-10-cfg0", "meanflow-2", "meanflow-1"]
    assert FlowOptions().schedule() is CFM_SCHEDULE and FlowOptions("meanflow").schedule() is MEANFLOW_SCHEDULE


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="flash"), "kind"), (dict(steps=0), "steps"), (dict(steps=1000), "steps"), (dict(steps=2.0), "steps"),
    (dict(steps=True), "steps"), (dict(cfg_rate=-1), "cfg_rate"), (dict(cfg_rate=float("nan")), "cfg_rate"),
    (dict(kind="meanflow", cfg_rate=0.7), "without CFG"),
])
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowOptions(**kwargs)


def test_parse_flow():
    assert parse_flow(None) == FlowOptions()
    assert parse_flow("meanflow") == FlowOptions("meanflow")
    opts = FlowOptions("cfm", 4, 0.0)
    assert parse_flow(opts) is opts
    with pytest.raises(ValueError, match="kind"):
        parse_flow("fast")
    with pytest.raises(TypeError):
        parse_flow(2)


# ---- files ------------------------------------------------------------------------------------

def test_missing_meanflow_file_names_it_and_the_command(tiny_checkpoint, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, root)
    (root / files.MEANFLOW_FILE).unlink()
    assert files.resolve(root).root == root  # the 10-step decoder does not need it
    with pytest.raises(CheckpointError, match=r"s3gen_meanflow\.safetensors.*nutq download --flow meanflow"):
        files.resolve(root, flow="meanflow")
    with pytest.raises(CheckpointError, match="nutq download --flow meanflow"):
        TTS(files.resolve(root), flow="meanflow")


def test_truncated_meanflow_file_is_detected(tiny_checkpoint, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, root)
    p = root / files.MEANFLOW_FILE
    p.write_bytes(p.read_bytes()[:-9])
    with pytest.raises(CheckpointError, match="truncated"):
        files.resolve(root, flow="meanflow")


def test_overwriting_a_checkpoint_without_meanflow_drops_the_stale_file(tmp_path):
    root = make_checkpoint(tmp_path / "m", "tiny", meanflow=True).root
    assert (root / files.MEANFLOW_FILE).exists()
    with pytest.raises(FileExistsError):
        make_checkpoint(root, "tiny")
    make_checkpoint(root, "tiny", overwrite=True)
    assert not (root / files.MEANFLOW_FILE).exists()


# ---- TTS --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cfm(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


@pytest.fixture(scope="module")
def meanflow(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, flow="meanflow")


def audio(stream) -> np.ndarray:
    return np.concatenate([c.audio for c in stream])


def test_meanflow_streams_and_differs_from_cfm(cfm, meanflow):
    a = audio(meanflow.stream("مرحبا بكم", params=P, seed=2))
    assert 0 < len(a) <= 20 * 960 and len(a) % 960 == 0 and np.isfinite(a).all()
    assert np.array_equal(a, audio(meanflow.stream("مرحبا بكم", params=P, seed=2)))
    assert not np.allclose(a, audio(cfm.stream("مرحبا بكم", params=P, seed=2)))


def test_per_call_flow_options(cfm, meanflow):
    p = SamplingParams(max_new_tokens=8, ignore_eos=True)
    base = audio(cfm.stream("مرحبا", params=p, seed=1))
    cfg0 = audio(cfm.stream("مرحبا", params=p, seed=1, flow=FlowOptions("cfm", cfg_rate=0)))
    assert len(base) == len(cfg0) and not np.array_equal(base, cfg0)
    one = audio(meanflow.stream("مرحبا", params=p, seed=1, flow=FlowOptions("meanflow", 1)))
    assert not np.array_equal(one, audio(meanflow.stream("مرحبا", params=p, seed=1)))
    with pytest.raises(ValueError, match="loaded the cfm decoder"):
        cfm.stream("مرحبا", flow=FlowOptions("meanflow"))
    with pytest.raises(ValueError, match="loaded the meanflow decoder"):
        meanflow.synthesize("مرحبا", flow=FlowOptions("cfm"), watermark=False)
    wav = meanflow.synthesize("مرحبا", seed=0, max_new_tokens=10, watermark=False)
    assert 0 < len(wav) <= 10 * 960


def test_voices_are_keyed_to_their_decoder(cfm, meanflow, tiny_checkpoint, tmp_path):
    assert cfm.model_id != meanflow.model_id
    # The same identity when the meanflow file is found in the directory rather than resolved.
    assert TTS(files.CheckpointFiles(tiny_checkpoint), flow="meanflow").model_id == meanflow.model_id
    clip = (0.1 * np.sin(np.arange(24000 * 2) * 2 * np.pi * 180 / 24000)).astype(np.float32)
    v_cfm, v_mf = cfm.prepare_voice(clip, sr=24000), meanflow.prepare_voice(clip, sr=24000)
    # Prepared with the meanflow file's own S3 tokenizer and CAMPPlus, not s3gen.pt's.
    assert not torch.equal(v_cfm.gen.embedding, v_mf.gen.embedding)
    from nutq.engine.voice_format import VoiceMeta, save_voice

    path = tmp_path / "v.safetensors"
    save_voice(v_cfm, path, meta=VoiceMeta(model=cfm.model_id))
    assert cfm.prepare_voice(path).gen.embedding.equal(v_cfm.gen.embedding)
    with pytest.raises(VoiceError, match="model"):
        meanflow.prepare_voice(path)


def test_meanflow_through_the_scheduler_equals_the_plain_stream(tiny_checkpoint, meanflow):
    text = "مرحبا بكم. هذا نص قصير؟"
    params = SamplingParams(max_new_tokens=16)
    plain = list(plain_stream(meanflow, text, params=params, seed=3))
    batched = TTS.from_local(tiny_checkpoint, flow="meanflow", max_sessions=2)
    try:
        got = list(batched.stream(text, params=params, seed=3))
    finally:
        batched.close()
    assert len(got) == len(plain) and all(np.array_equal(a.audio, b.audio) for a, b in zip(got, plain))


# ---- CLI --------------------------------------------------------------------------------------

def test_flow_flags_on_speak_serve_and_bench():
    ap = build_parser()
    for cmd in (["speak", "x"], ["serve"], ["bench"]):
        a = ap.parse_args(cmd + ["--flow", "meanflow", "--flow-steps", "1", "--flow-dtype", "bf16"])
        assert (a.flow, a.flow_steps, a.flow_cfg_rate, a.flow_dtype) == ("meanflow", 1, None, "bf16")
        assert ap.parse_args(cmd).flow == "cfm"
    with pytest.raises(SystemExit):
        ap.parse_args(["speak", "x", "--flow", "fast"])
    a = ap.parse_args(["download", "--flow", "meanflow", "--meanflow-revision", "abc"])
    assert (a.flow, a.meanflow_revision) == ("meanflow", "abc")


def test_speak_cli_with_meanflow(tiny_checkpoint, tmp_path):
    out = tmp_path / "mf.wav"
    run = [sys.executable, "-m", "nutq.cli", "speak", "مرحبا", "-o", str(out), "--model-dir", str(tiny_checkpoint),
           "--seed", "0", "--max-tokens", "10", "--flow", "meanflow", "--no-watermark"]
    p = subprocess.run(run, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    wav, sr = sf.read(out)
    assert sr == 24000 and 0 < len(wav) <= 10 * 960
    p = subprocess.run(run + ["--flow-cfg-rate", "0.5"], capture_output=True, text=True)
    assert p.returncode == 1 and "without CFG" in p.stderr


def test_make_checkpoint_cli_meanflow(tmp_path):
    p = subprocess.run([sys.executable, "-m", "nutq.cli", "make-checkpoint", str(tmp_path / "c"), "--meanflow"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert files.resolve(tmp_path / "c", flow="meanflow").meanflow == tmp_path / "c" / files.MEANFLOW_FILE

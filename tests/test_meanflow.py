"""The distilled (meanflow) S3Gen decoder and the CFG-free 10-step flow equal the official code.

Fixture: tests/golden/meanflow.safetensors from tools/parity/meanflow.py (chatterbox-tts 0.1.7, fp32,
random weights). Tolerances: 1e-4 max abs on mel (2 and 1 meanflow steps, finalize True/False),
on the CFG-0 10-step mel and on the estimator output; 1e-4 on the end-to-end waveform, as for the
10-step decoder's end-to-end test. Observed values are in PARITY.md.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import adjust_conv_post, load_golden, run_generator
from nutq.checkpoints.make import make_checkpoint
from nutq.models.random_init import randomize_module
from nutq.models.registry import build_meanflow
from nutq.models.s3gen.cfm import EulerCFG, MeanFlowEuler, linear_time_grid
from nutq.models.s3gen.flow import FLOW_TINY, Flow
from nutq.models.s3gen.model import S3GEN_FULL, S3GEN_TINY, RefDict
from nutq.tts import TTS

TOL = 1e-4
MF_TINY = replace(FLOW_TINY, estimator=replace(FLOW_TINY.estimator, meanflow=True))


@pytest.fixture(scope="module")
def golden():
    return load_golden("meanflow")


def flows(meta: dict, cfg=FLOW_TINY) -> tuple[Flow, Flow]:
    mf_cfg = replace(cfg, estimator=replace(cfg.estimator, meanflow=True))
    return (randomize_module(Flow(mf_cfg), meta["seed"]).eval(), randomize_module(Flow(cfg), meta["seed"]).eval())


def voice(g: dict) -> dict:
    return dict(prompt_token=g["in.prompt_token"], prompt_token_len=None, prompt_feat=g["in.prompt_feat"],
                embedding=g["in.embedding"])


def flow_errors(g: dict, mf: Flow, cfm: Flow) -> dict[str, float]:
    errs = {}
    for steps in (2, 1):
        for name, finalize in (("final", True), ("stream", False)):
            ours = mf.inference(g["in.token"], None, **voice(g), finalize=finalize, noise=g["in.noise"],
                                solver=MeanFlowEuler(steps))
            want = g[f"out.mf{steps}_{name}"]
            assert ours.shape == want.shape
            errs[f"meanflow{steps}_{name}"] = (ours - want).abs().max().item()
    ours = cfm.inference(g["in.token"], None, **voice(g), finalize=True, noise=g["in.noise"], solver=EulerCFG(10, 0.0))
    errs["cfm10_cfg0"] = (ours - g["out.cfg0_final"]).abs().max().item()
    with torch.inference_mode():
        est = {k: g[f"in.est_{k}"] for k in ("x", "mask", "mu", "t", "spks", "cond", "r")}
        r = est.pop("r")
        out = mf.decoder.estimator(**est, r=r)
    errs["estimator"] = (out - g["out.est"]).abs().max().item()
    return errs


def test_meanflow_and_cfg0_flows_match_official(golden):
    g, meta = golden
    errs = flow_errors(g, *flows(meta))
    bad = {k: v for k, v in errs.items() if v > TOL}
    assert not bad, f"differs from the official beyond {TOL}: {bad} (all: {errs})"


def test_full_state_dict_equals_official_meanflow_s3gen(golden):
    """Strict loading of s3gen_meanflow.safetensors: same keys, shapes and order as the official module."""
    _, meta = golden
    with torch.device("meta"):
        ours = [[k, list(v.shape)] for k, v in build_meanflow(S3GEN_FULL).state_dict().items()]
    assert ours == meta["full_keys"]
    flow_keys = [kv for kv in ours if kv[0].startswith("flow.")]
    assert flow_keys[-1] == ["flow.decoder.estimator.time_embed_mixer.weight", [1024, 2048]]


def test_steps_and_noise_matter(golden):
    """The fixture is not degenerate: one step differs from two, streaming holds 6 frames back."""
    g, _ = golden
    assert (g["out.mf1_final"] - g["out.mf2_final"]).abs().mean() > 0.05
    assert g["out.mf2_stream"].shape[-1] == g["out.mf2_final"].shape[-1] - 6


def test_cfg0_runs_one_row_per_item(golden, monkeypatch):
    """cfg_rate 0 drops the unconditional rows: every estimator call has batch B, not 2B."""
    g, meta = golden
    _, cfm = flows(meta)
    batches = []
    real = cfm.decoder.estimator.forward
    monkeypatch.setattr(cfm.decoder.estimator, "forward", lambda x, *a, **k: batches.append(x.shape[0]) or real(x, *a, **k))
    cfm.inference(g["in.token"], None, **voice(g), finalize=True, noise=g["in.noise"], solver=EulerCFG(3, 0.0))
    assert batches == [1, 1, 1]
    batches.clear()
    cfm.inference(g["in.token"], None, **voice(g), finalize=True, noise=g["in.noise"], solver=EulerCFG(3, 0.7))
    assert batches == [2, 2, 2]


def test_solvers_refuse_the_other_estimator(golden):
    g, meta = golden
    mf, cfm = flows(meta)
    with pytest.raises(ValueError, match="meanflow estimator"):
        cfm.inference(g["in.token"], None, **voice(g), finalize=True, noise=g["in.noise"], solver=MeanFlowEuler())
    with pytest.raises(ValueError, match="MeanFlowEuler"):
        mf.inference(g["in.token"], None, **voice(g), finalize=True, noise=g["in.noise"], solver=EulerCFG())
    with pytest.raises(ValueError, match="end time r"):
        mf.decoder.estimator(g["in.est_x"], g["in.est_mask"], g["in.est_mu"], g["in.est_t"], g["in.est_spks"],
                             g["in.est_cond"])


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_solver_steps_are_validated(bad):
    with pytest.raises(ValueError, match="n_timesteps"):
        MeanFlowEuler(bad)
    with pytest.raises(ValueError, match="n_timesteps"):
        EulerCFG(bad)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_cfg_rate_is_validated(bad):
    with pytest.raises(ValueError, match="cfg_rate"):
        EulerCFG(10, bad)


def test_linear_grid():
    assert linear_time_grid(2).tolist() == [0.0, 0.5, 1.0]


# ---- end to end: the official Turbo loading + S3Gen.inference path on nutq's meanflow file -------

def e2e_tts(root, meta) -> TTS:
    tts = TTS.from_local(root, flow="meanflow")
    adjust_conv_post(tts.s3gen.mel2wav, meta["conv_post_adjust"])
    return tts


def e2e_wav(tts: TTS, g: dict, meta: dict) -> torch.Tensor:
    """The official draw order with one generator: generated frames' noise, full z, then HiFT."""
    tokens = g["in.e2e_tokens"]
    ref: RefDict = tts.default_voice.gen
    gen = torch.Generator().manual_seed(meta["rng_seed"])
    n_gen = 2 * tokens.shape[1]
    generated = torch.randn(1, 80, n_gen, generator=gen)
    z = torch.randn(1, 80, 2 * ref.prompt_token.shape[1] + n_gen, generator=gen)
    z[..., -n_gen:] = generated
    wav, _ = tts.s3gen.inference(tokens, ref, noise=z, generator=gen)
    return wav


def test_meanflow_synthesis_matches_official_s3gen_inference(golden, tmp_path):
    g, meta = golden
    root = make_checkpoint(tmp_path / "m", "tiny", seed=meta["seed"], meanflow=True).root
    tts = e2e_tts(root, meta)
    assert tts.s3gen.meanflow and tts.flow.label == "meanflow-2"
    wav = e2e_wav(tts, g, meta)
    want = g["out.e2e_wav"]
    assert wav.shape == want.shape
    err = (wav - want).abs().max().item()
    assert err <= TOL, f"meanflow end to end differs from the official by {err:.3g}"
    # A silent or clamped reference would make equality cheap; another seed must change the output.
    assert 0.001 < want.std() < 0.5 and (want.abs() >= 0.99).float().mean() < 0.01
    other = e2e_wav(tts, g, dict(meta, rng_seed=meta["rng_seed"] + 1))
    assert (other - want).abs().max() > 100 * TOL


def test_meanflow_checkpoint_has_its_own_weights(tmp_path):
    """make-checkpoint's meanflow file is not s3gen.pt plus a mixer: a test can tell which S3Gen ran."""
    root = make_checkpoint(tmp_path / "m", "tiny", seed=0, meanflow=True).root
    cfm, mf = TTS.from_local(root).s3gen, TTS.from_local(root, flow="meanflow").s3gen
    a, b = cfm.flow.encoder_proj.weight, mf.flow.encoder_proj.weight
    assert a.shape == b.shape and not torch.equal(a, b)
    assert not hasattr(cfm.flow.decoder.estimator, "time_embed_mixer")
    assert mf.cfg == replace(S3GEN_TINY, flow=replace(S3GEN_TINY.flow, estimator=MF_TINY.estimator))


@pytest.mark.slow
@pytest.mark.refenv
def test_meanflow_matches_official_full_size(tmp_path):
    root = make_checkpoint(tmp_path / "full", "full", seed=1234, meanflow=True).root
    g, meta = run_generator("meanflow.py", tmp_path / "mf_full.safetensors", "--size", "full", "--ckpt", str(root))
    from nutq.models.s3gen.flow import FLOW_FULL

    errs = flow_errors(g, *flows(meta, FLOW_FULL))
    bad = {k: v for k, v in errs.items() if v > TOL}
    assert not bad, f"full-size flows differ from the official beyond {TOL}: {bad} (all: {errs})"
    err = (e2e_wav(e2e_tts(root, meta), g, meta) - g["out.e2e_wav"]).abs().max().item()
    assert err <= TOL, f"full-size meanflow end to end differs by {err:.3g}"
    print({**errs, "e2e_wav": err})

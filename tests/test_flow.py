"""The S3Gen flow (tokens + voice prompt -> mel) equals the official `CausalMaskedDiffWithXvec`.

Fixture: tests/golden/flow.safetensors from tools/parity/flow.py. The official CFM draws its noise
with `torch.randn_like`; the generator patches it to return `in.noise`, which we pass as `noise=`.
Tolerance 1e-4 max abs on mu and on the mel after 10 CFG Euler steps, for finalize=True/False and a
padded batch (observed: bit-identical at tiny; 2.4e-6 at full size, on mel values up to ~5).

Official quirk: with finalize=False the official code builds the CFM mask before cutting the 6
look-ahead frames and crashes; the generator cuts the mask to mu's length (CosyVoice 2 behaviour),
which is what nutq does.
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.cfm import EulerCFG, cosine_time_grid
from nutq.models.s3gen.flow import FLOW_FULL, FLOW_TINY, Flow

TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("flow")


@pytest.fixture(scope="module")
def flow(golden):
    _, meta = golden
    return randomize_module(Flow(FLOW_TINY), meta["seed"]).eval()


def voice(g: dict) -> dict:
    return dict(prompt_token=g["in.prompt_token"], prompt_token_len=None, prompt_feat=g["in.prompt_feat"],
                embedding=g["in.embedding"])


def synth(model: Flow, g: dict, finalize: bool = True, batch: int = 1, **kw) -> torch.Tensor:
    kw.setdefault("noise", g["in.noise"][:batch])
    token, token_len = g["in.token"][:batch], g["in.token_len"][:batch]
    return model.inference(token, token_len, **voice(g), finalize=finalize, **kw)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != official {tuple(b.shape)}"
    return (a - b).abs().max().item()


def check_against(model: Flow, g: dict, tol: float) -> dict[str, float]:
    n_prompt, n_new = g["in.prompt_token"].shape[1], g["in.token"].shape[1]
    tokens = torch.cat([g["in.prompt_token"], g["in.token"][:1]], dim=1)
    lens = torch.tensor([n_prompt + n_new])
    errs = {}
    with torch.inference_mode():
        for name, fin in (("final", True), ("stream", False)):
            mu, mask = model.encode(tokens, lens, finalize=fin)
            errs[f"mu_{name}"] = max_err(mu, g[f"out.mu_{name}"])
            errs[f"mel_{name}"] = max_err(synth(model, g, fin), g[f"out.mel_{name}"])
            if fin:
                assert torch.equal(mask.float(), g["out.mask_final"]), "CFM frame mask differs"
    errs["mel_batch"] = max_err(synth(model, g, True, batch=2), g["out.mel_batch"])
    bad = {k: v for k, v in errs.items() if v > tol}
    assert not bad, f"flow differs from official beyond {tol}: {bad}"
    return errs


def test_full_state_dict_matches_official_listing(statedict_listing):
    official = statedict_listing("s3gen_full.txt", strip_prefix="flow.")
    with torch.device("meta"):
        model = Flow(FLOW_FULL)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(official), (
        f"missing {sorted(set(official) - set(ours))[:5]}, unexpected {sorted(set(ours) - set(official))[:5]}"
    )
    assert list(ours.items()) == list(official.items()), "same keys, but a shape or the order differs"
    assert sum(v.numel() for v in model.state_dict().values()) == pytest.approx(112.5e6, rel=1e-3)


def test_tiny_has_the_full_key_structure():
    def pattern(cfg):
        with torch.device("meta"):
            keys = Flow(cfg).state_dict().keys()
        return {re.sub(r"(?<=\.)\d+(?=\.)", "N", k) for k in keys}  # layer indices -> N

    assert pattern(FLOW_TINY) == pattern(FLOW_FULL)


def test_tiny_matches_official(golden, flow):
    g, _ = golden
    check_against(flow, g, TOL)


def test_output_length_is_two_frames_per_new_token_when_final(golden, flow):
    g, _ = golden
    n_new = g["in.token"].shape[1]
    final = synth(flow, g, finalize=True, solver=EulerCFG(1))
    stream = synth(flow, g, finalize=False, solver=EulerCFG(1))
    assert final.shape == (1, 80, 2 * n_new)
    assert stream.shape == (1, 80, 2 * n_new - 6), "finalize=False holds back exactly 3 tokens x 2 frames"
    # The ready frames line up with the final call's (same noise and prompt; only the bidirectional
    # context differs). Observed mean abs diff 0.11 against a spread of 1.15; off by 2 frames: 1.46.
    spread = (final - final.mean()).abs().mean()
    assert (stream - final[..., : stream.shape[-1]]).abs().mean() < 0.3 * spread
    few = flow.inference(g["in.token"][:1, :3], None, **voice(g), finalize=False)
    assert few.shape == (1, 80, 0), "with <= 3 new tokens nothing is ready while streaming"


def test_same_noise_same_mel_different_noise_different_mel(golden, flow):
    g, _ = golden
    a = synth(flow, g, solver=EulerCFG(2))
    b = synth(flow, g, solver=EulerCFG(2))
    other = torch.randn(g["in.noise"][:1].shape, generator=torch.Generator().manual_seed(7))
    c = synth(flow, g, solver=EulerCFG(2), noise=other)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.1, "the noise argument must reach the solver"


def test_longer_noise_uses_its_first_frames(golden, flow):
    """A session draws noise once for its longest prefix; shorter calls use the leading frames."""
    g, _ = golden
    noise = g["in.noise"][:1]
    longer = torch.cat([noise, torch.randn(1, 80, 40)], dim=-1)
    same = synth(flow, g, noise=longer, solver=EulerCFG(2))
    assert torch.equal(same, synth(flow, g, noise=noise, solver=EulerCFG(2)))
    with pytest.raises(ValueError, match="frames"):
        synth(flow, g, noise=noise[..., :-1])


def test_noise_none_draws_from_the_generator(golden, flow):
    g, _ = golden
    def draw(seed):
        return synth(flow, g, noise=None, generator=torch.Generator().manual_seed(seed), solver=EulerCFG(1))

    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_solver_is_pluggable(golden, flow):
    g, _ = golden
    two = synth(flow, g, solver=EulerCFG(n_timesteps=2, cfg_rate=0.5))
    one_step = synth(flow, g, solver=EulerCFG(n_timesteps=1, cfg_rate=0.5))
    other_cfg = synth(flow, g, solver=EulerCFG(n_timesteps=2, cfg_rate=0.2))
    assert one_step.shape == two.shape and not torch.equal(one_step, two)
    assert not torch.equal(other_cfg, two)


def test_cfg_rate_zero_is_plain_conditional_euler(golden, flow):
    """With r = 0 the unconditional row has no weight: Euler by hand on the official CFM inputs
    (mu, mask, speaker, cond recorded in the fixture) must give our mel."""
    g, _ = golden
    n_prompt_frames = g["in.prompt_feat"].shape[1]
    mu, mask, spks, cond = g["out.mu_final"], g["out.mask_final"], g["out.spks"], g["out.cond"]
    x = g["in.noise"][:1, :, : mu.shape[-1]]
    t = cosine_time_grid(4)
    with torch.inference_mode():
        for k in range(4):
            v = flow.decoder.estimator(x, mask, mu, t[k].expand(1), spks, cond)
            x = x + (t[k + 1] - t[k]) * v
        ours = synth(flow, g, solver=EulerCFG(4, 0.0))
    assert (ours - x[..., n_prompt_frames:]).abs().max() <= 1e-5


def test_cosine_time_grid():
    t = cosine_time_grid(10)
    assert t.shape == (11,) and t[0] == 0 and abs(t[-1].item() - 1) < 1e-6
    steps = t.diff()
    assert (steps[1:] > steps[:-1]).all(), "cosine grid: small steps near noise, large near data"


def test_runs_in_bfloat16(golden, flow):
    """Reduced precision runs end to end and stays near fp32 (loose: bf16 has 8 mantissa bits)."""
    g, _ = golden
    ref = synth(flow, g, solver=EulerCFG(2))
    half = Flow(FLOW_TINY).eval()
    half.load_state_dict(flow.state_dict())
    half = half.to(torch.bfloat16)
    out = synth(half, g, solver=EulerCFG(2))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 0.03, f"bf16 relative error {rel:.3g}"  # observed 0.012


@pytest.mark.slow
@pytest.mark.refenv
def test_full_size_matches_official(tmp_path):
    out = tmp_path / "flow_full.safetensors"
    g, meta = run_generator("flow.py", out, "--size", "full")
    model = randomize_module(Flow(FLOW_FULL), meta["seed"]).eval()
    errs = check_against(model, g, TOL)
    print("full-size max abs errors:", errs)

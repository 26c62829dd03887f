"""HiFT vocoder (`mel2wav`) equals the official chatterbox-tts 0.1.7 HiFTGenerator.

Fixture: tests/golden/hift.safetensors from tools/parity/hift.py (tiny widths, random weights with
a documented `conv_post` adjustment so the waveform is not clamped). The official source is random;
the fixture holds sources from official calls under `torch.manual_seed(n)`, which nutq reproduces
with `torch.Generator().manual_seed(n)` (same draws, same order).

Tolerances: waveform and F0 1e-4 max abs (the project's parity bound for waveforms; both sides run the same fp32 CPU
kernels and agree bit for bit today, so anything above ~1e-6 means a real change); sources 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.audio.fade import TRIM_SAMPLES, apply_trim_fade, trim_fade_curve
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.hift import FULL, TINY, HiFTConfig, HiFTGenerator
from nutq.models.s3gen.source import draw_source_randomness, sine_excitation

WAV_TOL = 1e-4
SRC_TOL = 1e-6


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(cfg: HiFTConfig, meta: dict) -> HiFTGenerator:
    """nutq's HiFT with the fixture's weights: randomize_module + the same conv_post adjustment."""
    m = randomize_module(HiFTGenerator(cfg), meta["seed"]).eval()
    adj = meta["conv_post_adjust"]
    with torch.no_grad():
        m.conv_post.parametrizations.weight.original0.mul_(adj["g_scale"])
        m.conv_post.bias[: cfg.n_fft // 2 + 1].add_(adj["logmag_bias_shift"])
    return m


def config_from_official_kwargs(meta: dict) -> HiFTConfig:
    kw, f0 = meta["official_kwargs"], meta["f0_kwargs"]
    return HiFTConfig(
        in_channels=kw["in_channels"], base_channels=kw["base_channels"], nb_harmonics=kw["nb_harmonics"],
        sampling_rate=kw["sampling_rate"], nsf_alpha=kw["nsf_alpha"], nsf_sigma=kw["nsf_sigma"],
        nsf_voiced_threshold=float(kw["nsf_voiced_threshold"]), upsample_rates=tuple(kw["upsample_rates"]),
        upsample_kernel_sizes=tuple(kw["upsample_kernel_sizes"]), n_fft=kw["istft_params"]["n_fft"],
        hop=kw["istft_params"]["hop_len"], resblock_kernel_sizes=tuple(kw["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(d) for d in kw["resblock_dilation_sizes"]),
        source_resblock_kernel_sizes=tuple(kw["source_resblock_kernel_sizes"]),
        source_resblock_dilation_sizes=tuple(tuple(d) for d in kw["source_resblock_dilation_sizes"]),
        lrelu_slope=kw["lrelu_slope"], audio_limit=kw["audio_limit"], f0_channels=f0["cond_channels"],
    )


@pytest.fixture(scope="module")
def golden():
    return load_golden("hift")


@pytest.fixture(scope="module")
def tiny(golden):
    return build(TINY, golden[1])


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != official {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


def check_against_official(m: HiFTGenerator, t: dict, meta: dict) -> dict[str, float]:
    """Every comparison the fixture supports; returns the max abs diffs."""
    seeds, mel = meta["rng_seeds"], t["in.mel"]
    with torch.no_grad():
        errs = {"f0": maxdiff(m.f0(mel), t["out.f0"])}
        s = m.source(t["in.f0_frames"], generator=gen(seeds["m_source"]))
        errs["m_source"] = maxdiff(s, t["out.m_source"])
        errs["decode"] = maxdiff(m.decode(mel, t["out.m_source"]), t["out.decode"])
    wav, s = m.inference(mel, generator=gen(seeds["inference"]))
    errs["inference_wav"] = maxdiff(wav, t["out.inference_wav"])
    errs["inference_source"] = maxdiff(s, t["out.inference_source"])
    wav, s = m.inference(mel, cache_source=t["in.cache_source"], generator=gen(seeds["cached"]))
    errs["cached_wav"] = maxdiff(wav, t["out.cached_wav"])
    errs["cached_source"] = maxdiff(s, t["out.cached_source"])
    return errs


def assert_errs(errs: dict[str, float]) -> None:
    for k, e in errs.items():
        tol = SRC_TOL if "source" in k else WAV_TOL
        assert e <= tol, f"{k}: max abs diff {e:.3g} > {tol:g} vs the official HiFT ({errs})"


# ------------------------------------------------------------------ structure


def test_full_state_dict_matches_official_listing(statedict_listing):
    want = statedict_listing("s3gen_hift_mel2wav.txt", strip_prefix="mel2wav.")
    with torch.device("meta"):
        sd = HiFTGenerator(FULL).state_dict()
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert sorted(set(want) - set(got)) == [], "keys missing in nutq"
    assert sorted(set(got) - set(want)) == [], "keys nutq has that the official file lacks"
    assert {k: v for k, v in got.items() if want[k] != v} == {}, "shape mismatches"
    # The weight-norm tensors carry the new parametrization names, e.g. what loaders probe for:
    assert got["conv_pre.parametrizations.weight.original1"] == (512, 80, 7)
    assert got["ups.0.parametrizations.weight.original0"] == (512, 1, 1)  # ConvTranspose: g is (in, 1, 1)


def test_tiny_config_is_what_the_fixture_built_officially(golden):
    _, meta = golden
    assert meta["size"] == "tiny"
    assert config_from_official_kwargs(meta) == TINY


def test_output_has_480_samples_per_frame_within_audio_limit(tiny, golden):
    t, meta = golden
    mel = t["in.mel"]
    wav, s = tiny.inference(mel, generator=gen(0))
    assert TINY.samples_per_frame == FULL.samples_per_frame == 480
    assert wav.shape == (mel.shape[0], mel.shape[2] * 480) and s.shape == (mel.shape[0], 1, mel.shape[2] * 480)
    assert wav.abs().max() <= TINY.audio_limit
    # a single frame is the smallest valid chunk
    wav1, _ = tiny.inference(mel[:, :, :1], generator=gen(0))
    assert wav1.shape == (mel.shape[0], 480)


# ------------------------------------------------------------------ parity (tiny)


def test_tiny_matches_official(tiny, golden):
    t, meta = golden
    assert_errs(check_against_official(tiny, t, meta))


def test_decode_depends_on_the_source(tiny, golden):
    """Guards the parity test: with another source the waveform moves far beyond the tolerance."""
    t, _ = golden
    with torch.no_grad():
        a = tiny.decode(t["in.mel"], t["out.m_source"])
        b = tiny.decode(t["in.mel"], t["out.inference_source"])
    assert a.std() > 1e-2, "fixture waveform is near silent; the comparison would prove little"
    assert (a.abs() >= TINY.audio_limit).float().mean() < 0.01, "fixture waveform is clamped"
    assert (a - b).abs().max() > 100 * WAV_TOL


# ------------------------------------------------------------------ source and its randomness


def test_cache_source_overwrites_only_the_first_samples(tiny, golden):
    t, meta = golden
    cache = t["in.cache_source"]
    n = cache.shape[-1]
    _, s_plain = tiny.inference(t["in.mel"], generator=gen(7))
    _, s_cached = tiny.inference(t["in.mel"], cache_source=cache, generator=gen(7))
    assert torch.equal(s_cached[:, :, :n], cache)
    assert torch.equal(s_cached[:, :, n:], s_plain[:, :, n:])
    # An empty cache is the official default and changes nothing.
    _, s_empty = tiny.inference(t["in.mel"], cache_source=torch.zeros(1, 1, 0), generator=gen(7))
    assert torch.equal(s_empty, s_plain)


def test_same_generator_seed_same_audio_different_seed_different_audio(tiny, golden):
    mel = golden[0]["in.mel"]
    w1, _ = tiny.inference(mel, generator=gen(3))
    w2, _ = tiny.inference(mel, generator=gen(3))
    w3, _ = tiny.inference(mel, generator=gen(4))
    assert torch.equal(w1, w2)
    assert (w1 - w3).abs().max() > 1e-3


def test_predrawn_randomness_equals_generator(tiny, golden):
    f0 = golden[0]["in.f0_frames"]
    b, frames = f0.shape
    phase, noise = draw_source_randomness(b, TINY.nb_harmonics + 1, frames * 480, gen(11))
    assert torch.all(phase[:, 0] == 0) and phase.abs().max() <= math.pi
    with torch.no_grad():
        assert torch.equal(tiny.source(f0, phase=phase, noise=noise), tiny.source(f0, generator=gen(11)))


def test_sine_excitation_voicing_and_harmonics():
    """Voiced (F0 > 10 Hz, strictly): 0.1·sin of the running phase per harmonic; unvoiced: silence
    before noise is added. With zero noise the harmonics are exact sines from sample 1."""
    sr, L, h = 24000, 960, 9
    f0 = torch.cat([torch.full((1, 1, L // 2), 10.0), torch.full((1, 1, L // 2), 200.0)], dim=2)
    phase = torch.zeros(1, h, 1)
    phase[0, 2] = 0.5
    exc = sine_excitation(f0, phase, torch.zeros(1, h, L), sr, 0.1, 0.003, 10.0)
    assert exc.shape == (1, h, L) and exc.dtype == torch.float32
    assert torch.all(exc[:, :, : L // 2] == 0), "F0 == threshold must count as unvoiced"
    cycles = torch.cumsum(f0[0, 0].double() / sr, 0)  # running sum, starts at f0/sr for sample 0
    for k in (0, 2):
        want = 0.1 * torch.sin(2 * math.pi * ((k + 1) * cycles % 1) + float(phase[0, k]))
        assert (exc[0, k, L // 2:].double() - want[L // 2:]).abs().max() < 1e-5
    # Noise: std noise_std where voiced, sine_amp/3 where unvoiced.
    noise = torch.randn(1, h, L, generator=gen(0))
    exc_n = sine_excitation(f0, phase, noise, sr, 0.1, 0.003, 10.0)
    assert torch.allclose(exc_n[:, :, : L // 2], noise[:, :, : L // 2] * (0.1 / 3))
    assert torch.allclose(exc_n[:, :, L // 2:] - exc[:, :, L // 2:], noise[:, :, L // 2:] * 0.003, atol=1e-7)


# ------------------------------------------------------------------ errors, dtypes


def test_bad_inputs_fail_clearly(tiny):
    with pytest.raises(ValueError, match="0 frames"):
        tiny.inference(torch.zeros(1, 80, 0))
    with pytest.raises(ValueError, match=r"\(B, 80, T\)"):
        tiny.inference(torch.zeros(1, 100, 5))
    with pytest.raises(ValueError, match=r"\(B, 80, T\)"):
        tiny.inference(torch.zeros(80, 5))
    with pytest.raises(ValueError, match="cache_source"):
        tiny.inference(torch.zeros(1, 80, 2), cache_source=torch.zeros(1, 1, 961))
    with pytest.raises(ValueError, match="source must be"):
        tiny.decode(torch.zeros(1, 80, 2), torch.zeros(1, 1, 959))


def test_runs_in_bfloat16_close_to_fp32(tiny, golden):
    t, _ = golden
    ref = tiny.decode(t["in.mel"], t["out.m_source"]).detach()
    m = HiFTGenerator(TINY)
    m.load_state_dict(tiny.state_dict())
    m = m.to(torch.bfloat16)
    with torch.no_grad():
        out = m.decode(t["in.mel"].bfloat16(), t["out.m_source"])
        _, s = m.inference(t["in.mel"].bfloat16(), generator=gen(0))
    assert out.dtype == torch.bfloat16 and s.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    # bf16 keeps ~3 significant digits through ~40 layers: same waveform, loosely (measured 0.063;
    # a dtype mix-up gives ~1).
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.15, f"bf16 waveform deviates {rel:.3f} (relative L2) from fp32"


# ------------------------------------------------------------------ trim fade


def test_trim_fade_equals_official_buffer():
    t, _ = load_golden("audio_frontends")
    curve = trim_fade_curve()
    assert curve.shape == (2 * TRIM_SAMPLES,) == t["out.trim_fade"].shape
    assert torch.equal(curve, t["out.trim_fade"])
    assert torch.all(curve[:TRIM_SAMPLES] == 0) and curve[TRIM_SAMPLES] == 0 and curve[-1] == 1
    assert torch.all(curve[TRIM_SAMPLES + 1:] >= curve[TRIM_SAMPLES:-1]), "fade-in must not dip"


def test_apply_trim_fade_touches_only_the_first_960_samples():
    wav = torch.ones(2, 3000)
    out = apply_trim_fade(wav)
    assert torch.equal(out[:, :960], trim_fade_curve().expand(2, -1))
    assert torch.equal(out[:, 960:], wav[:, 960:])
    assert torch.equal(wav, torch.ones(2, 3000)), "input must not be modified in place"
    short = apply_trim_fade(torch.ones(700))  # shorter than the curve: the part that exists
    assert torch.equal(short, trim_fade_curve()[:700])


# ------------------------------------------------------------------ full official sizes (live)


@pytest.mark.slow
@pytest.mark.refenv
def test_full_size_matches_official_live(tmp_path):

    out = tmp_path / "hift_full.safetensors"
    t, meta = run_generator("hift.py", out, "--size", "full")
    assert meta["size"] == "full"
    errs = check_against_official(build(FULL, meta), t, meta)
    print("full-size HiFT max abs diffs:", errs)
    assert_errs(errs)

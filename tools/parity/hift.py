"""Parity fixture for the HiFT vocoder (S3Gen `mel2wav`): run in the reference env.

    python tools/parity/hift.py --out tests/golden/hift.safetensors            # tiny
    python tools/parity/hift.py --out /tmp/hift_full.safetensors --size full   # official sizes

Official module:
- full: `S3Token2Wav().mel2wav`, i.e. exactly as s3gen.py builds it (takes ~10 s: it builds the
  whole S3Gen to get there).
- tiny: the official `HiFTGenerator` built through its constructor with narrow widths
  (`base_channels=32`, F0 predictor `cond_channels=16`) and every other argument as s3gen.py passes
  it; the arguments are written into `meta["official_kwargs"]` so the test can check nutq's TINY.

Weights: `randomize_module(seed)`, then one deliberate change on both sides: `conv_post`'s
weight-norm magnitude ×0.3 and its 9 log-magnitude biases −3 (`meta["conv_post_adjust"]`). Random
weights otherwise predict log-magnitudes around +1 ± 3, so ~90 % of samples sit on the ±0.99
clamp and a comparison would prove little; adjusted, the waveform is speech-like (std ~0.03, no
sample clamped). The official source is random, so the fixture holds sources
made by official calls under `torch.manual_seed`, and every waveform it holds is reproducible by
nutq from the same source (`decode(mel, s)`) or from a CPU `torch.Generator` with the same seed:
- out.f0           f0_predictor(mel)                                   (B, T)
- out.m_source     m_source(upsampled in.f0_frames) after manual_seed(seed+1)  (B, 1, T·480)
                   (a hand-made F0 track with voiced and unvoiced frames, since a random-weight F0
                   predictor rarely crosses the 10 Hz voicing threshold)
- out.decode       decode(mel, out.m_source)                            (B, T·480)
- out.inference_wav / out.inference_source: inference(mel) after manual_seed(seed+2)
- out.cached_wav / out.cached_source: inference(mel, cache_source=in.cache_source)
                   after manual_seed(seed+3); in.cache_source = out.m_source[..., :700]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import parser, save  # noqa: E402  (puts src/ on sys.path)

# This folder holds generators named like official packages (e.g. s3tokenizer.py); drop it from the
# import path so `chatterbox` imports the real ones.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from nutq.models.random_init import randomize_module

N_CACHE = 700  # deliberately not a multiple of 480
CONV_POST_ADJUST = {"g_scale": 0.3, "logmag_bias_shift": -3.0}


def adjust_conv_post(hift: torch.nn.Module, g_scale: float, logmag_bias_shift: float) -> None:
    """Bring random-weight log-magnitudes into a realistic range (nutq's test does the same)."""
    with torch.no_grad():
        hift.conv_post.parametrizations.weight.original0.mul_(g_scale)
        n_bins = hift.conv_post.bias.shape[0] // 2
        hift.conv_post.bias[:n_bins].add_(logmag_bias_shift)


def official_kwargs(size: str) -> dict:
    # As s3gen.py's S3Token2Wav passes them, on top of HiFTGenerator's defaults.
    kw = dict(
        in_channels=80, base_channels=512, nb_harmonics=8, sampling_rate=24000, nsf_alpha=0.1,
        nsf_sigma=0.003, nsf_voiced_threshold=10, upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7], istft_params={"n_fft": 16, "hop_len": 4},
        resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        lrelu_slope=0.1, audio_limit=0.99,
    )
    f0_kw = dict(in_channels=80, cond_channels=512)
    if size == "tiny":
        kw["base_channels"] = 32
        f0_kw["cond_channels"] = 16
    return kw, f0_kw


def build(size: str):
    if size == "full":
        from chatterbox.models.s3gen.s3gen import S3Token2Wav

        return S3Token2Wav().mel2wav.eval()
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator

    kw, f0_kw = official_kwargs(size)
    return HiFTGenerator(**kw, f0_predictor=ConvRNNF0Predictor(**f0_kw)).eval()


def main() -> None:
    args = parser(__doc__).parse_args()
    torch.set_grad_enabled(False)
    hift = randomize_module(build(args.size), args.seed)
    adjust_conv_post(hift, **CONV_POST_ADJUST)
    frames = 6 if args.size == "tiny" else 20
    batch = 2

    g = torch.Generator().manual_seed(args.seed)
    mel = -6.0 + 2.0 * torch.randn(batch, 80, frames, generator=g)  # log-mel-like values
    voiced = torch.rand(batch, frames, generator=g) > 0.3
    f0_frames = torch.where(voiced, 60.0 + 300.0 * torch.rand(batch, frames, generator=g), torch.zeros(()))
    f0_frames[:, 0] = 0.0  # starts unvoiced, like speech after silence
    f0_frames[:, 1] = 10.0  # exactly at the threshold: unvoiced (strict >)

    out = {"f0": hift.f0_predictor(mel)}
    torch.manual_seed(args.seed + 1)
    f0_up = hift.f0_upsamp(f0_frames[:, None]).transpose(1, 2)  # (B, L, 1)
    s = hift.m_source(f0_up)[0].transpose(1, 2)  # (B, 1, L)
    out["m_source"] = s
    out["decode"] = hift.decode(mel, s)
    torch.manual_seed(args.seed + 2)
    out["inference_wav"], out["inference_source"] = hift.inference(mel)
    cache = s[:, :, :N_CACHE].clone()
    torch.manual_seed(args.seed + 3)
    out["cached_wav"], out["cached_source"] = hift.inference(mel, cache_source=cache)

    kw, f0_kw = official_kwargs(args.size)
    meta = dict(component="hift", size=args.size, seed=args.seed, frames=frames, batch=batch,
                n_cache=N_CACHE, conv_post_adjust=CONV_POST_ADJUST, official_kwargs=kw, f0_kwargs=f0_kw,
                rng_seeds={"m_source": args.seed + 1, "inference": args.seed + 2, "cached": args.seed + 3})
    tensors = {"in.mel": mel, "in.f0_frames": f0_frames, "in.cache_source": cache}
    tensors.update({f"out.{k}": v for k, v in out.items()})
    save(args.out, tensors, meta)


if __name__ == "__main__":
    main()

"""Golden CAMPPlus x-vectors and Kaldi fbanks from the official chatterbox-tts 0.1.7 (reference env).

Builds the official `chatterbox.models.s3gen.xvector.CAMPPlus` (full: exactly as S3Gen builds it;
tiny: nutq's CAMPPLUS_TINY sizes), fills it with nutq's deterministic random weights, puts it in
eval mode (BatchNorm on running statistics) and records:
  in.wav (N,), out.xvector (1, 192)          official `inference(wav[None])`: fbank, mean removal, forward
  in.wav_batch (2, M), out.xvector_batch     `inference` on two equal-length rows (one x-vector per row)
  in.feats (2, T, 80), out.xvector_feats     `forward` on arbitrary features (network alone, no fbank)
  out.frames_feats (2, C, T/2)               the same up to `out_nonlinear` (before stats pooling)
  out.fbank (T, 80)                          torchaudio.compliance.kaldi.fbank(wav[None], num_mel_bins=80)
  in.noise{k}, out.fbank_noise{k}            the same fbank on white noise of edge-case lengths
The fbank fixture for tests/test_fbank.py is folded into this file.

The official CAMPPlus hard-codes the FCM head width (32) and the block depths (12, 24, 16). For the
tiny size, `_TinyCAMPPlus` rebuilds `head` and `xvector` from the official building blocks
(FCM, TDNNLayer, CAMDenseTDNNBlock, TransitLayer, StatsPool, DenseLayer) with the tiny sizes, in the
same order and with the same names as the official constructor.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import common  # noqa: F401  (sys.path, HF offline)
import torch

NOISE_LENGTHS = (400, 559, 720, 16_037)  # one frame exactly, one frame + change, 3 frames, ~1 s


def synthetic_voice(num_samples: int, seed: int, sr: int = 16_000) -> torch.Tensor:
    """Deterministic speech-like audio: a gliding harmonic voice through three formants, syllable-rate
    amplitude envelope with short pauses, plus a little noise. float32, peak 0.5."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(8, generator=g, dtype=torch.float64)
    t = torch.arange(num_samples, dtype=torch.float64) / sr
    f0 = (100 + 60 * r[0]) * (1 + 0.15 * torch.sin(2 * math.pi * (0.5 + r[1]) * t + 6.28 * r[2]))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    formants = torch.tensor([500.0, 1500.0, 2500.0]) * (0.9 + 0.2 * r[3:6])
    voiced = torch.zeros_like(t)
    for h in range(1, 40):
        fh = h * f0
        gain = sum(torch.exp(-(((fh - f) / 150.0) ** 2)) / (i + 1) for i, f in enumerate(formants))
        voiced += gain * (fh < 7500) * torch.sin(h * phase) / h**0.5
    syllables = torch.sin(math.pi * (3.0 + r[6]) * t + 6.28 * r[7]).abs() ** 0.7
    noise = torch.randn(num_samples, generator=g, dtype=torch.float64)
    x = voiced * syllables + 0.02 * noise
    return (0.5 * x / x.abs().max()).to(torch.float32)


def build_official(size: str, seed: int):
    from chatterbox.models.s3gen import xvector as xv

    from nutq.models.random_init import randomize_module
    from nutq.models.s3gen.campplus import CAMPPLUS_FULL, CAMPPLUS_TINY

    cfg = CAMPPLUS_TINY if size == "tiny" else CAMPPLUS_FULL

    class _TinyCAMPPlus(xv.CAMPPlus):
        def __init__(self):
            super().__init__(feat_dim=cfg.feat_dim, embedding_size=cfg.embedding_size, growth_rate=cfg.growth_rate,
                             bn_size=cfg.bn_size, init_channels=cfg.init_channels, memory_efficient=False)
            conf = "batchnorm-relu"
            self.head = xv.FCM(num_blocks=list(cfg.head_blocks), m_channels=cfg.m_channels, feat_dim=cfg.feat_dim)
            layers = OrderedDict(tdnn=xv.TDNNLayer(self.head.out_channels, cfg.init_channels, 5, stride=2,
                                                   dilation=1, padding=-1, config_str=conf))
            ch = cfg.init_channels
            for i, (n, dil) in enumerate(zip(cfg.block_layers, cfg.block_dilations)):
                layers[f"block{i + 1}"] = xv.CAMDenseTDNNBlock(
                    num_layers=n, in_channels=ch, out_channels=cfg.growth_rate,
                    bn_channels=cfg.bn_size * cfg.growth_rate, kernel_size=cfg.kernel_size, dilation=dil,
                    config_str=conf, memory_efficient=False)
                ch += n * cfg.growth_rate
                layers[f"transit{i + 1}"] = xv.TransitLayer(ch, ch // 2, bias=False, config_str=conf)
                ch //= 2
            layers["out_nonlinear"] = xv.get_nonlinear(conf, ch)
            layers["stats"] = xv.StatsPool()
            layers["dense"] = xv.DenseLayer(ch * 2, cfg.embedding_size, config_str="batchnorm_")
            self.xvector = torch.nn.Sequential(layers)

    # full: the arguments S3Token2Mel uses (memory_efficient only matters in training)
    model = _TinyCAMPPlus() if size == "tiny" else xv.CAMPPlus(memory_efficient=False)
    randomize_module(model, seed)
    return model.eval(), cfg


def main():
    args = common.parser(__doc__).parse_args()
    import torchaudio.compliance.kaldi as kaldi

    model, cfg = build_official(args.size, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    wav = synthetic_voice(51_234, args.seed)  # 3.2 s, not a whole number of frames
    wav_batch = torch.stack([synthetic_voice(24_000, args.seed + 1), synthetic_voice(24_000, args.seed + 2)])
    feats = torch.randn(2, 150, cfg.feat_dim, generator=g)
    tensors = {"in.wav": wav, "in.wav_batch": wav_batch, "in.feats": feats}
    with torch.inference_mode():
        tensors["out.xvector"] = model.inference(wav[None])
        tensors["out.xvector_batch"] = model.inference(wav_batch)
        tensors["out.xvector_feats"] = model(feats)
        # frame level, before pooling: far more input-sensitive than the pooled x-vector
        tensors["out.frames_feats"] = model.xvector[:-2](model.head(feats.permute(0, 2, 1)))
        tensors["out.fbank"] = kaldi.fbank(wav[None], num_mel_bins=80)
        for k, n in enumerate(NOISE_LENGTHS):
            # loud noise with a DC offset on odd cases, so DC removal and the log floor both matter
            noise = torch.randn(n, generator=g) * (0.3 if k % 2 == 0 else 3.0) + (0.2 if k % 2 else 0.0)
            tensors[f"in.noise{k}"] = noise
            tensors[f"out.fbank_noise{k}"] = kaldi.fbank(noise[None], num_mel_bins=80)
    meta = {"size": args.size, "seed": args.seed, "config": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in cfg.__dict__.items()},
            "noise_lengths": list(NOISE_LENGTHS)}
    common.save(args.out, tensors, meta)


if __name__ == "__main__":
    main()

"""CAMPPlus x-vector speaker encoder (3D-Speaker / FunASR CAM++): 16 kHz audio -> (B, 192).

S3Gen conditions its flow on this x-vector of the reference voice. The network, inference only:

- `head` (FCM): a small 2-D ResNet over (80 mel bins x time). Conv3x3 + BN + ReLU, two stages of
  two basic residual blocks that halve the frequency axis (stride (2, 1)), a last conv with stride
  (2, 1) + BN + ReLU: 80 bins -> 10, flattened with the channels to 32·10 = 320 features/frame.
- `xvector`: TDNN (Conv1d k5 stride 2 + BN + ReLU, halving the frame rate); three densely connected
  blocks of CAM layers (each BN-ReLU-Conv1x1 bottleneck, BN-ReLU, then a context-aware masked
  conv: local Conv1d(k3, dilation) gated by sigmoid(MLP(global mean + mean over 100-frame
  segments))), each block followed by a transit BN-ReLU-Conv1x1 halving the channels;
  BN + ReLU; mean and unbiased std over time; Conv1x1 to 192 + BatchNorm without affine.

Every BatchNorm here always uses its running statistics (the module is never trained in nutq).
`embed()` does what the official `inference()` does for one utterance: Kaldi fbank (80 bins),
subtract the per-utterance mean over time, forward.

State-dict keys equal the official `speaker_encoder.*` keys of s3gen.pt without the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nutq.audio.fbank import fbank, kaldi_mel_banks

__all__ = ["CAMPPlusConfig", "CAMPPLUS_FULL", "CAMPPLUS_TINY", "CAMPPlus"]


@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80  # fbank bins
    m_channels: int = 32  # channels of the 2-D head
    head_blocks: tuple[int, int] = (2, 2)
    init_channels: int = 128  # TDNN output
    growth_rate: int = 32  # channels each CAM layer adds
    bn_size: int = 4  # bottleneck = bn_size * growth_rate
    block_layers: tuple[int, ...] = (12, 24, 16)
    block_dilations: tuple[int, ...] = (1, 2, 2)
    kernel_size: int = 3
    seg_len: int = 100  # frames per pooling segment of the CAM context (at the TDNN's 50 frames/s)
    embedding_size: int = 192

    @property
    def head_channels(self) -> int:
        return self.m_channels * (self.feat_dim // 8)  # frequency axis halved three times


CAMPPLUS_FULL = CAMPPlusConfig()
# Tiny: same key structure (head, TDNN, 3 blocks with transit layers, dense), small widths, 2-3 layers a block.
CAMPPLUS_TINY = CAMPPlusConfig(m_channels=8, init_channels=32, growth_rate=8, bn_size=2, block_layers=(2, 3, 2))


class FrozenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that always normalises with its running statistics, in train() mode too."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BNReLU(nn.Module):
    """BatchNorm1d + ReLU; the official names it `<name>.batchnorm` inside a Sequential."""

    def __init__(self, channels: int):
        super().__init__()
        self.batchnorm = FrozenBatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.batchnorm(x))


class BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), FrozenBatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCMHead(nn.Module):
    """(B, F, T) fbank -> (B, m_channels * F/8, T)."""

    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(m)
        # the official builds both stages with head_blocks[0] blocks; equal in every release
        self.layer1 = nn.Sequential(*(BasicResBlock(m, m, 2 if i == 0 else 1) for i in range(cfg.head_blocks[0])))
        self.layer2 = nn.Sequential(*(BasicResBlock(m, m, 2 if i == 0 else 1) for i in range(cfg.head_blocks[1])))
        self.conv2 = nn.Conv2d(m, m, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(m)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))  # (B, m, F, T)
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))  # (B, m, F/8, T)
        return out.flatten(1, 2)  # (B, m * F/8, T)


class TDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.nonlinear = BNReLU(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Local conv gated per channel by a context of the global mean plus 100-frame segment means."""

    def __init__(self, bn_ch: int, out_ch: int, kernel_size: int, dilation: int, seg_len: int):
        super().__init__()
        self.seg_len = seg_len
        self.linear_local = nn.Conv1d(bn_ch, out_ch, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.linear2 = nn.Conv1d(bn_ch // 2, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, T)
        T = x.shape[-1]
        # mean of each 100-frame segment (the last one over the frames it has), spread back over time
        seg = F.avg_pool1d(x, self.seg_len, self.seg_len, ceil_mode=True)  # (B, C, ceil(T/100))
        seg = seg.repeat_interleave(self.seg_len, dim=-1)[..., :T]  # (B, C, T)
        context = x.mean(-1, keepdim=True) + seg
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class CAMDenseLayer(nn.Module):
    def __init__(self, in_ch: int, cfg: CAMPPlusConfig, dilation: int):
        super().__init__()
        bn_ch = cfg.bn_size * cfg.growth_rate
        self.nonlinear1 = BNReLU(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = BNReLU(bn_ch)
        self.cam_layer = CAMLayer(bn_ch, cfg.growth_rate, cfg.kernel_size, dilation, cfg.seg_len)

    def forward(self, x: Tensor) -> Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseBlock(nn.Module):
    """Densely connected: each layer sees all previous outputs and appends growth_rate channels."""

    def __init__(self, n_layers: int, in_ch: int, cfg: CAMPPlusConfig, dilation: int):
        super().__init__()
        for i in range(n_layers):  # children named tdnnd1.. as in the official state dict
            self.add_module(f"tdnnd{i + 1}", CAMDenseLayer(in_ch + i * cfg.growth_rate, cfg, dilation))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.nonlinear = BNReLU(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    """Conv1x1 to the embedding + BatchNorm without affine parameters (and no ReLU)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = nn.Module()
        self.nonlinear.batchnorm = FrozenBatchNorm1d(out_ch, affine=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C)
        return self.nonlinear.batchnorm(self.linear(x.unsqueeze(-1))).squeeze(-1)


class XVector(nn.Module):
    """(B, head_channels, T) -> (B, embedding_size)."""

    def __init__(self, cfg: CAMPPlusConfig):
        super().__init__()
        self.tdnn = TDNNLayer(cfg.head_channels, cfg.init_channels, 5, stride=2)
        ch = cfg.init_channels
        for i, (n_layers, dilation) in enumerate(zip(cfg.block_layers, cfg.block_dilations, strict=True)):
            self.add_module(f"block{i + 1}", CAMDenseBlock(n_layers, ch, cfg, dilation))
            ch += n_layers * cfg.growth_rate
            self.add_module(f"transit{i + 1}", TransitLayer(ch, ch // 2))
            ch //= 2
        self.out_nonlinear = BNReLU(ch)
        self.dense = DenseLayer(2 * ch, cfg.embedding_size)
        self.n_blocks = len(cfg.block_layers)

    def frame_features(self, x: Tensor) -> Tensor:
        """(B, head_channels, T) -> (B, C, ceil(T/2)): everything before the pooling over time."""
        x = self.tdnn(x)  # (B, init_channels, ceil(T/2))
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        return self.out_nonlinear(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.frame_features(x)  # (B, C, T')
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)  # (B, 2C)
        return self.dense(stats)


class CAMPPlus(nn.Module):
    """fbank features (B, T, 80) -> x-vector (B, 192). Inference only (BatchNorm frozen)."""

    def __init__(self, cfg: CAMPPlusConfig = CAMPPLUS_FULL):
        super().__init__()
        self.cfg = cfg
        self.head = FCMHead(cfg)
        self.xvector = XVector(cfg)

    def forward(self, feats: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.cfg.feat_dim:
            raise ValueError(f"expected fbank features (B, T, {self.cfg.feat_dim}), got {tuple(feats.shape)}")
        if feats.shape[1] < 3:
            # the TDNN halves T and the unbiased std over time needs two of its frames
            raise ValueError(f"need at least 3 fbank frames (720 samples = 45 ms at 16 kHz), got {feats.shape[1]}")
        x = feats.to(self.head.conv1.weight.dtype).transpose(1, 2)  # (B, F, T)
        return self.xvector(self.head(x))

    @torch.inference_mode()
    def embed(self, wav16k: Tensor) -> Tensor:
        """16 kHz audio (N,) -> (1, 192); (B, N) rows of equal length -> (B, 192).

        Features are computed in fp32 (the FFT needs it) and cast to the module's dtype.
        """
        wav = wav16k.unsqueeze(0) if wav16k.dim() == 1 else wav16k
        wav = wav.to(self.head.conv1.weight.device, torch.float32)
        feats = fbank(wav, self.cfg.feat_dim, kaldi_mel_banks(self.cfg.feat_dim))  # (B, T, F)
        feats = feats - feats.mean(dim=1, keepdim=True)  # per-utterance mean over time
        return self(feats)

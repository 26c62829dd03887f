"""S3 speech tokenizer (S3TokenizerV2, "speech_tokenizer_v2_25hz"): 16 kHz audio -> 25 Hz speech tokens.

Used only to build a voice: the reference clip's tokens become S3Gen's `prompt_token` and, cut to
6 s / 150 tokens, T3's conditioning prompt. The model:

- log-mel front end (`nutq.audio.s3_mel`, 128 mels @ 100 frames/s) from the `_mel_filters` and
  `window` buffers, which s3gen.pt stores;
- two stride-2 Conv1d + GELU (100 -> 25 frames/s), padded frames zeroed before each conv;
- blocks of pre-LN attention + MLP. The attention is Whisper-like (q and k each scaled by
  head_dim^-1/4, key without bias, softmax in fp32, padded keys masked with a -1e10 bias) with
  rotate-half RoPE on 64 dims, plus an FSMN memory: a depthwise Conv1d(k31) over the value
  projection, added to its input and to the attention output;
- FSQ: Linear -> 8 dims, tanh·0.999, round (half to even), +1 -> digits in {0,1,2}, code Σ d_i·3^i
  (3^8 = 6561 codes).

State-dict keys equal the official `tokenizer.*` keys of s3gen.pt without the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nutq.audio.s3_mel import S3_N_FFT, s3_log_mel, s3_mel_filters, s3_num_frames

__all__ = ["S3TokenizerConfig", "S3_TOKENIZER_FULL", "S3_TOKENIZER_TINY", "S3Tokenizer",
           "MEL_FRAMES_PER_TOKEN", "S3_TOKEN_RATE"]

S3_TOKEN_RATE = 25  # tokens per second
MEL_FRAMES_PER_TOKEN = 4  # two stride-2 convs over 100 mel frames/s


@dataclass(frozen=True)
class S3TokenizerConfig:
    n_mels: int = 128
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 6
    fsmn_kernel: int = 31
    mlp_ratio: int = 4
    fsq_dim: int = 8  # 3 levels per dim -> 3^8 = 6561 codes
    rope_dim: int = 64  # the official RoPE table is built for 64 dims whatever the head size
    rope_positions: int = 2048
    rope_theta: float = 10000.0
    # The official model switches to 30 s windows with 4 s overlap above 3000 mel frames; nutq
    # only tokenizes voice references (<= 10 s), so it refuses longer input instead.
    max_mel_frames: int = 3000

    def __post_init__(self) -> None:
        if self.n_state % self.n_head or self.n_state // self.n_head != self.rope_dim:
            raise ValueError(
                f"head size must be rope_dim={self.rope_dim}: n_state={self.n_state}, n_head={self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_state // self.n_head

    @property
    def codebook_size(self) -> int:
        return 3**self.fsq_dim


S3_TOKENIZER_FULL = S3TokenizerConfig()
# Tiny: same key structure (head size stays 64 because of the RoPE table), 2 heads, 2 blocks.
S3_TOKENIZER_TINY = S3TokenizerConfig(n_state=128, n_head=2, n_layer=2)


def _lengths_after_conv(lengths: Tensor) -> Tensor:
    return (lengths - 1) // 2 + 1  # kernel 3, stride 2, padding 1


def _valid_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) -> (B, max_len) bool, True on frames inside the utterance."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def rope_tables(cfg: S3TokenizerConfig, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(length, rope_dim) cos and sin for rotate-half RoPE, fp32.

    The angles use the first rope_dim/2 frequencies twice ([f, f]); `torch.polar` gives the same
    fp32 cos/sin as the official table (torch.cos differs in the last bit for some angles).
    """
    if length > cfg.rope_positions:
        raise ValueError(f"{length} token frames exceed the RoPE table ({cfg.rope_positions})")
    half = cfg.rope_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.rope_dim, 2, device=device)[:half].float() / cfg.rope_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)  # (T, half)
    rot = torch.view_as_real(torch.polar(torch.ones_like(angles), angles))  # (T, half, 2)
    cos, sin = rot[..., 0], rot[..., 1]
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, T, H, D); cos/sin: (T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return x * cos + rotated * sin


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back (matters for bf16/fp16)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


class FSMNAttention(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        d = cfg.n_state
        self.n_head = cfg.n_head
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        # depthwise memory over time, zero-padded on both sides ("same" length)
        self.fsmn_block = nn.Conv1d(d, d, cfg.fsmn_kernel, groups=d, bias=False)
        self.fsmn_pad = ((cfg.fsmn_kernel - 1) // 2, cfg.fsmn_kernel - 1 - (cfg.fsmn_kernel - 1) // 2)

    def forward(self, x: Tensor, key_bias: Tensor, valid: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x: (B, T, C); key_bias: (B, 1, 1, T) additive; valid: (B, T, 1) 0/1 in x's dtype."""
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.n_head, -1)  # (B, T, H, D)
        k = self.key(x).view(B, T, self.n_head, -1)
        v = self.value(x)  # (B, T, C)

        memory = v * valid
        memory = memory + self.fsmn_block(F.pad(memory.transpose(1, 2), self.fsmn_pad)).transpose(1, 2)
        memory = memory * valid  # (B, T, C)

        scale = q.shape[-1] ** -0.25  # applied to q and k separately, as the official model does
        q = _apply_rope(q, cos, sin).transpose(1, 2) * scale  # (B, H, T, D)
        k = _apply_rope(k, cos, sin).transpose(1, 2) * scale
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)  # (B, H, T, D)
        scores = (q @ k.transpose(-1, -2) + key_bias).float()  # (B, H, T, T)
        weights = scores.softmax(dim=-1).to(v.dtype)
        attended = (weights @ v).transpose(1, 2).reshape(B, T, C)
        return self.out(attended) + memory


class ResidualBlock(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.attn = FSMNAttention(cfg)
        self.attn_ln = LayerNorm(cfg.n_state, eps=1e-5)
        n_mlp = cfg.mlp_ratio * cfg.n_state
        self.mlp = nn.Sequential(nn.Linear(cfg.n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, cfg.n_state))
        self.mlp_ln = LayerNorm(cfg.n_state, eps=1e-5)

    def forward(self, x: Tensor, key_bias: Tensor, valid: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x), key_bias, valid, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """(B, n_mels, T) log-mel at 100 Hz -> (B, ceil(T/4), n_state) at 25 Hz, with output lengths."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.n_layer))

    def forward(self, mel: Tensor, mel_lens: Tensor) -> tuple[Tensor, Tensor]:
        x = mel * _valid_mask(mel_lens, mel.shape[-1]).unsqueeze(1).to(mel.dtype)
        x = F.gelu(self.conv1(x))
        lens = _lengths_after_conv(mel_lens)
        x = x * _valid_mask(lens, x.shape[-1]).unsqueeze(1).to(x.dtype)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T', C); not re-masked, as in the official
        lens = _lengths_after_conv(lens)

        valid = _valid_mask(lens, x.shape[1])  # (B, T')
        key_bias = ((~valid).to(x.dtype) * -1e10)[:, None, None, :]  # (B, 1, 1, T')
        valid = valid.unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        cos, sin = rope_tables(self.cfg, x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, key_bias, valid, cos, sin)
        return x, lens


class FSQCodebook(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.project_down = nn.Linear(cfg.n_state, cfg.fsq_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T) int64 codes in [0, 3^fsq_dim)."""
        h = self.project_down(x).float().tanh()
        # 0.999 keeps tanh off ±1 so that rounding yields exactly three levels {-1, 0, 1}
        digits = (h * 0.999).round() + 1  # round half to even, like the official
        powers = 3.0 ** torch.arange(h.shape[-1], device=h.device, dtype=h.dtype)
        return (digits * powers).sum(dim=-1).long()  # exact: integers < 2^24 in fp32


class FSQQuantizer(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self._codebook = FSQCodebook(cfg)  # name fixed by the official state dict

    def forward(self, x: Tensor) -> Tensor:
        return self._codebook(x)


class S3Tokenizer(nn.Module):
    """16 kHz audio (or its log-mel) -> speech tokens at 25 Hz. Inference only.

    `forward(mels (B, n_mels, T), mel_lens (B,))` or `forward(wavs (B, N) / (N,), wav_lens)`
    -> (tokens (B, T') int64, token_lens (B,) int64), with T' = ceil(T / 4) for the longest item;
    positions past an item's length hold whatever the padded frames produce (as in the official).
    `tokenize(wavs, max_len)` is the official wrapper's `forward(wavs, max_len=...)`.
    """

    def __init__(self, cfg: S3TokenizerConfig = S3_TOKENIZER_FULL):
        super().__init__()
        self.cfg = cfg
        # fixed DSP constants, stored in s3gen.pt (the official class rebuilds them on init too)
        self.register_buffer("_mel_filters", s3_mel_filters(cfg.n_mels))
        self.register_buffer("window", torch.hann_window(S3_N_FFT))
        self.encoder = AudioEncoder(cfg)
        self.quantizer = FSQQuantizer(cfg)

    def log_mel(self, wav16k: Tensor) -> Tensor:
        """(N,) -> (n_mels, N // 160); (B, N) -> (B, n_mels, N // 160), each row normalised alone.

        Always fp32. Casting the whole module to bf16/fp16 also rounds the filterbank buffer; the
        tokenizer runs once per voice, so keeping it in fp32 costs nothing and is recommended.
        """
        return s3_log_mel(wav16k.float(), self._mel_filters.float(), self.window.float())

    @torch.inference_mode()
    def quantize(self, mels: Tensor, mel_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n_mels, T) normalised log-mel, (B,) valid frames -> (tokens (B, T'), token_lens (B,))."""
        if mels.dim() != 3 or mels.shape[1] != self.cfg.n_mels:
            raise ValueError(f"expected mels of shape (B, {self.cfg.n_mels}, T), got {tuple(mels.shape)}")
        mel_lens = mel_lens.to(device=mels.device, dtype=torch.long)
        if int(mel_lens.min()) < 1:
            raise ValueError("every utterance needs at least one mel frame (160 samples at 16 kHz)")
        if int(mel_lens.max()) > self.cfg.max_mel_frames:
            raise ValueError(
                f"{int(mel_lens.max())} mel frames exceed {self.cfg.max_mel_frames} (30 s); the official "
                "sliding-window mode for long audio is not implemented (voice references are <= 10 s)"
            )
        dtype = self.encoder.conv1.weight.dtype
        hidden, token_lens = self.encoder(mels.to(dtype), mel_lens)
        return self.quantizer(hidden), token_lens

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """3-D input: log-mels with `lengths` in frames. 1-D/2-D input: 16 kHz audio, `lengths` in
        samples (default: all of each row); each item's mel is computed on its own samples only."""
        if x.dim() == 3:
            if lengths is None:
                lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
            return self.quantize(x, lengths)
        wavs = x.unsqueeze(0) if x.dim() == 1 else x
        if wavs.dim() != 2:
            raise ValueError(f"expected audio (N,) / (B, N) or mels (B, n_mels, T), got {tuple(x.shape)}")
        if lengths is None:
            return self.tokenize(wavs)
        return self.tokenize([w[: int(n)] for w, n in zip(wavs, lengths.tolist())])

    @torch.inference_mode()
    def tokenize(self, wavs: Tensor | Sequence[Tensor], max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """16 kHz audio -> (tokens (B, T') int64, token_lens (B,) int64), as the official wrapper.

        `wavs`: one (N,) tensor, a (B, N) tensor (rows are utterances) or a list of 1-D tensors of
        any lengths. Each utterance gets its own log-mel (and its own normalisation peak), cut to
        `max_len` tokens' worth of frames (4 per token) when given; mels are zero-padded to a batch.
        Audio is not padded to a whole number of tokens: the last token may see a partial 40 ms.
        """
        if isinstance(wavs, Tensor):
            wavs = [wavs] if wavs.dim() == 1 else list(wavs)
        if len(wavs) == 0:
            raise ValueError("no audio to tokenize")
        device = self._mel_filters.device
        mels = []
        for wav in wavs:
            if wav.dim() != 1:
                raise ValueError(f"each utterance must be 1-D audio, got shape {tuple(wav.shape)}")
            mel = self.log_mel(wav.to(device))  # (n_mels, T)
            if max_len is not None:
                mel = mel[:, : max_len * MEL_FRAMES_PER_TOKEN]
            mels.append(mel)
        mel_lens = torch.tensor([m.shape[-1] for m in mels], dtype=torch.long, device=device)
        batch = mels[0].new_zeros(len(mels), self.cfg.n_mels, int(mel_lens.max()))  # (B, n_mels, T)
        for i, mel in enumerate(mels):
            batch[i, :, : mel.shape[-1]] = mel
        return self.quantize(batch, mel_lens)

    @staticmethod
    def num_tokens(num_samples: int) -> int:
        """Tokens produced for `num_samples` of 16 kHz audio (no max_len)."""
        frames = s3_num_frames(num_samples)
        return (((frames - 1) // 2 + 1) - 1) // 2 + 1

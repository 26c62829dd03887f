"""The Chatterbox voice encoder (`ve.pt`): a speaker embedding for T3's conditioning.

A GE2E-style d-vector network: 3-layer LSTM over 40-band power mels, the last layer's final
hidden state projected 256→256, ReLU, L2-normalized. An utterance is cut into partials of 160
frames (1.6 s) taken every `frame_step` = 77 frames; the partial embeddings are averaged and
re-normalized. `prepare_conditionals` then averages the utterance embeddings of its (single)
reference without re-normalizing, giving T3's `speaker_emb` (1, 256).

The front end (silence trim + mel) lives in nutq.audio; this module takes 16 kHz waveforms or
mels. Inputs are assumed to be 16 kHz already (the engine resamples the reference once).
`similarity_weight/bias` are GE2E training leftovers kept only so `ve.pt` loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nutq.audio.trim import trim_bounds
from nutq.audio.ve_mel import VE_N_MELS, VE_SAMPLE_RATE, ve_mel

__all__ = ["VoiceEncoderConfig", "FULL", "TINY", "VoiceEncoder"]


@dataclass(frozen=True)
class VoiceEncoderConfig:
    n_mels: int = VE_N_MELS
    hidden_size: int = 256
    embed_size: int = 256
    num_layers: int = 3
    partial_frames: int = 160  # 1.6 s at 100 frames/s
    # Partials per second of audio. The official step is round((sr / rate) / partial_frames);
    # it divides by the partial length where the hop (also 160) was presumably meant. Kept as is.
    rate: float = 1.3
    min_coverage: float = 0.8  # a zero-padded last partial must be covered this much by audio
    trim_top_db: float = 20.0

    @property
    def frame_step(self) -> int:
        step = int(round((VE_SAMPLE_RATE / self.rate) / self.partial_frames))
        assert 0 < step <= self.partial_frames
        return step

    def partial_windows(self, n_frames: int) -> tuple[int, int]:
        """(number of partials, mel length they span) for an utterance of `n_frames` frames.

        Windows start every `frame_step` frames. Whole windows are always taken; the leftover
        tail gets one more, zero-padded window only if the window would hold at least
        `min_coverage` real frames; otherwise it is dropped. An utterance shorter than one
        window always gets one (zero-padded) window.
        """
        if n_frames <= 0:
            raise ValueError("an utterance needs at least one mel frame")
        win, step = self.partial_frames, self.frame_step
        n_wins, leftover = divmod(max(n_frames - win + step, 0), step)
        # `leftover + (win - step)` = real frames in the candidate window starting after the last one
        if n_wins == 0 or (leftover + win - step) / win >= self.min_coverage:
            n_wins += 1
        return n_wins, win + step * (n_wins - 1)


FULL = VoiceEncoderConfig()
# Same key structure, narrower LSTM for fast CPU parity tests. The front end (40 mels), the
# partial geometry and the 256-d embedding stay official: T3's speaker projection consumes it.
TINY = VoiceEncoderConfig(hidden_size=64, embed_size=256)


class VoiceEncoder(nn.Module):
    def __init__(self, config: VoiceEncoderConfig = FULL):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.n_mels, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.proj = nn.Linear(config.hidden_size, config.embed_size)
        # GE2E cosine-similarity scale/offset; unused at inference (official initial values).
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, partials: Tensor) -> Tensor:
        """(B, partial_frames, n_mels) mels -> (B, embed_size) L2-normalized partial embeddings."""
        _, (hidden, _) = self.lstm(partials)  # hidden: (num_layers, B, H)
        raw = F.relu(self.proj(hidden[-1]))
        return raw / torch.linalg.norm(raw, dim=1, keepdim=True)

    def embeds_from_mels(self, mels: list[Tensor], max_batch: int | None = None) -> Tensor:
        """Utterance embeddings (B, embed_size) float32 from B mels of shape (T_i, n_mels).

        The partials of all utterances go through the LSTM together (in chunks of `max_batch`
        partials if given), then each utterance's partials are averaged and re-normalized.
        """
        if not mels:
            raise ValueError("embeds_from_mels needs at least one mel")
        param = self.proj.weight
        cfg, step = self.config, self.config.frame_step
        partials, counts = [], []
        for mel in mels:
            mel = mel.to(device=param.device, dtype=torch.float32)
            n, target = cfg.partial_windows(mel.shape[0])
            mel = mel[:target] if mel.shape[0] >= target else F.pad(mel, (0, 0, 0, target - mel.shape[0]))
            partials.append(mel.unfold(0, cfg.partial_frames, step).transpose(1, 2))  # (n, P, M)
            counts.append(n)
        batch = torch.cat(partials).to(param.dtype)  # (sum n, P, M)
        chunks = batch.split(max_batch) if max_batch else (batch,)
        partial_embeds = torch.cat([self(c) for c in chunks]).float()  # (sum n, E)

        embeds = torch.stack([seg.mean(dim=0) for seg in partial_embeds.split(counts)])  # (B, E)
        embeds = embeds / torch.linalg.norm(embeds, dim=1, keepdim=True)
        if not torch.isfinite(embeds).all():
            raise ValueError("voice encoder produced a zero embedding (every ReLU output was 0); "
                             "the reference is probably silence or noise")
        return embeds

    def embeds_from_wavs(self, wavs: list, trim: bool = True, max_batch: int | None = None) -> Tensor:
        """(B, embed_size) float32 utterance embeddings of B 16 kHz mono waveforms (numpy/torch).

        trim=True removes leading/trailing silence first (librosa `trim(top_db=20)` semantics).
        Raises ValueError for an empty or all-zero waveform. A clip shorter than one partial
        (1.6 s after trimming) is zero-padded to one partial, as the official encoder does.
        """
        mels = []
        for i, wav in enumerate(wavs):
            if len(wav) == 0 or not _has_signal(wav):
                raise ValueError(f"reference waveform {i} is empty or digital silence; cannot embed a voice")
            if trim:
                start, end = trim_bounds(wav, top_db=self.config.trim_top_db)
                wav = wav[start:end]
            mels.append(ve_mel(wav, device=self.proj.weight.device))
        return self.embeds_from_mels(mels, max_batch=max_batch)

    def embed_utterance(self, wav16k, trim: bool = True) -> Tensor:
        """(embed_size,) float32 embedding of one 16 kHz waveform."""
        return self.embeds_from_wavs([wav16k], trim=trim)[0]

    def speaker_embedding(self, wavs: list, trim: bool = True) -> Tensor:
        """(1, embed_size) T3 `speaker_emb` as `prepare_conditionals` makes it: the plain mean of
        the utterance embeddings (not re-normalized; with one reference it is that embedding)."""
        return self.embeds_from_wavs(wavs, trim=trim).mean(dim=0, keepdim=True)


def _has_signal(wav) -> bool:
    if isinstance(wav, Tensor):
        return bool(wav.detach().abs().max() > 0)
    return bool(np.abs(np.asarray(wav)).max() > 0)


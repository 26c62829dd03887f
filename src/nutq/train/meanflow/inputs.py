"""The flow's inputs for a batch of prepared examples, built the way inference builds them.

Per example, inference (`Flow.inference`) encodes the voice's prompt tokens followed by the new
speech tokens, gives the prompt's 24 kHz mel as `cond` in the first 2·Pf frames (zeros after), the
CAMPPlus x-vector through `spk_embed_affine_layer` as the speaker input, and keeps only the frames
after the prompt. A training batch holds examples of different lengths, so rows are right-padded
and encoded the way the batched streaming path does it (`Flow.inference_packed`: padding isolated
in the encoder, a frame mask in the estimator); each row then equals that example alone up to
float rounding (tested against `Flow.inference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FlowBatch", "FlowInputs", "collate", "flow_inputs", "example_noise"]


@dataclass(frozen=True)
class FlowBatch:
    """Collated examples (CPU or device tensors); frames are 50 Hz mel frames, 2 per token."""

    tokens: Tensor  # (B, T) prompt tokens ++ speech tokens, right-padded with 0
    token_len: Tensor  # (B,) valid tokens per row
    prompt_frames: Tensor  # (B,) mel frames of the prompt (2·Pf)
    cond: Tensor  # (B, 80, T_mel) the prompt's mel in its first frames, zeros after
    xvector: Tensor  # (B, 192)
    index: Tensor  # (B,) the examples' indices in their dataset (they seed each example's noise)
    ids: tuple[str, ...]

    @property
    def mel_len(self) -> Tensor:
        return 2 * self.token_len

    @property
    def n_frames(self) -> int:
        return self.cond.size(-1)

    def to(self, device) -> "FlowBatch":
        return FlowBatch(self.tokens.to(device), self.token_len.to(device), self.prompt_frames.to(device),
                         self.cond.to(device), self.xvector.to(device), self.index, self.ids)


@dataclass(frozen=True)
class FlowInputs:
    """What the estimator takes besides x and the times, plus the loss mask."""

    mu: Tensor  # (B, 80, T_mel)
    mask: Tensor  # (B, 1, T_mel) 1 on valid frames (prompt included)
    spks: Tensor  # (B, 80)
    cond: Tensor  # (B, 80, T_mel)
    generated: Tensor  # (B, 1, T_mel) 1 on the frames inference returns: after the prompt, before padding

    def rows(self, idx: Tensor) -> "FlowInputs":
        """The inputs of rows idx (with repeats), for several (t, r) pairs per example."""
        return FlowInputs(*(v[idx] for v in (self.mu, self.mask, self.spks, self.cond, self.generated)))


def collate(examples: Sequence, indices: Sequence[int]) -> FlowBatch:
    """PreparedExamples (speech_tokens, flow_prompt_tokens, flow_prompt_mel, xvector) -> FlowBatch."""
    rows = [torch.cat([e.flow_prompt_tokens.long(), e.speech_tokens.long()]) for e in examples]
    for e in examples:
        if e.flow_prompt_mel.shape[0] != 2 * e.flow_prompt_tokens.numel():
            raise ValueError(f"example {e.id}: prompt mel has {e.flow_prompt_mel.shape[0]} frames for "
                             f"{e.flow_prompt_tokens.numel()} prompt tokens (needs 2 per token)")
    token_len = torch.tensor([len(r) for r in rows])
    tokens = torch.zeros(len(rows), int(token_len.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    cond = torch.zeros(len(rows), examples[0].flow_prompt_mel.shape[1], 2 * tokens.size(1))
    for i, e in enumerate(examples):
        cond[i, :, : e.flow_prompt_mel.shape[0]] = e.flow_prompt_mel.float().T
    prompt_frames = torch.tensor([e.flow_prompt_mel.shape[0] for e in examples])
    xvector = torch.stack([e.xvector.float().reshape(-1) for e in examples])
    return FlowBatch(tokens, token_len, prompt_frames, cond, xvector, torch.as_tensor(list(indices)),
                     tuple(e.id for e in examples))


@torch.no_grad()
def flow_inputs(flow, batch: FlowBatch) -> FlowInputs:
    """mu, masks and speaker input from the (frozen) flow encoder of `flow` (an nutq `Flow`)."""
    t_mel = batch.n_frames
    mu, _ = flow.encode(batch.tokens, batch.token_len, n_frames=t_mel, isolate_rows=True)
    frames = torch.arange(t_mel, device=mu.device)
    valid = frames < batch.mel_len.to(mu.device).unsqueeze(1)
    generated = valid & (frames >= batch.prompt_frames.to(mu.device).unsqueeze(1))
    spks = flow._spks(batch.xvector, batch.tokens.size(0))
    return FlowInputs(mu, valid.unsqueeze(1).to(mu.dtype), spks, batch.cond.to(mu.dtype),
                      generated.unsqueeze(1).to(mu.dtype))


def example_noise(seed: int, index: int, draw: int, n_frames: int, n_mels: int = 80) -> Tensor:
    """The starting noise of example `index`'s `draw`-th trajectory: (n_mels, n_frames), N(0, 1).

    A function of (seed, index, draw) only, so cached and on-the-fly teachers, resumed runs and
    the evaluation all see the same noise for the same example."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + index) * 1_009 + draw)
    return torch.randn(n_mels, n_frames, generator=g)


def batch_noise(batch: FlowBatch, seed: int, draws: Sequence[int], device) -> Tensor:
    """(B, 80, T_mel) noise for a batch, each row's own (padded frames zero)."""
    z = torch.zeros(batch.tokens.size(0), batch.cond.size(1), batch.n_frames)
    for i, (idx, n, d) in enumerate(zip(batch.index.tolist(), batch.mel_len.tolist(), draws)):
        z[i, :, :n] = example_noise(seed, idx, d, n, batch.cond.size(1))
    return z.to(device)

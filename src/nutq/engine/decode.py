"""T3 prefill and decode step as small functions over a static KV cache, and on-device sampling.

Each runs under inference mode by itself (a session's generator must not hold the mode across
its yields, where it would leak into the consumer). The functions are pure up to the cache they
write: positions are Python ints known on the host, and the fed-back token stays a device tensor,
so a step never waits for the previous token to reach the host. `Sampler` keeps a session's sampling state (the ids emitted so far, for the
repetition penalty) on the device as well.
"""

from __future__ import annotations

import torch

from ..models.t3 import T3
from .sampling import SamplingParams, cfg_mix, sample, sampling_logits

__all__ = ["prefill", "decode_step", "Sampler"]

Probes = tuple[tuple[int, int], ...]


def _split(out, probes: Probes) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out if probes else (out, None)


@torch.inference_mode()
def prefill(t3: T3, cond: torch.Tensor, text_ids: torch.Tensor, cache, probes: Probes = ()):
    """Run [cond | text | BOS | BOS] for both CFG rows from position 0.

    Returns (logits (2, V) fp32 for the first speech token, probe attention or None, prefill length).
    """
    embeds = t3.prefill_embeds(cond, text_ids, cfg_rows=True)
    if embeds.shape[1] >= cache.max_len:
        raise ValueError(f"prompt of {embeds.shape[1]} positions does not fit a KV cache of {cache.max_len}")
    h, attn = _split(t3.forward_hidden(embeds, 0, cache, probes=probes), probes)
    return t3.speech_logits(h[:, -1]).float(), attn, embeds.shape[1]


@torch.inference_mode()
def decode_step(t3: T3, token: torch.Tensor, speech_pos: int, pos: int, cache, probes: Probes = ()):
    """Feed `token` ((1,) device tensor) at speech position `speech_pos`, absolute position `pos`.

    Returns (logits (2, V) fp32, probe attention or None). The learned speech position is read by
    slicing the table with a host int: no index tensor has to travel to the device.
    """
    e = t3.speech_emb(token.reshape(1, 1)) + t3.speech_pos_emb.emb.weight[speech_pos]
    h, attn = _split(t3.forward_hidden(e.expand(2, -1, -1), pos, cache, probes=probes), probes)
    return t3.speech_logits(h[:, -1]).float(), attn


class Sampler:
    """CFG mix -> guard -> repetition penalty -> temperature -> min_p -> top_p -> top_k -> draw.

    `seen` starts with the BOS marked, as the official penalty counts the BOS as emitted.
    `forced` replays given ids instead of drawing (parity tests); `record` keeps every distribution
    sampled from (debugging and parity; it costs a copy per step).
    """

    def __init__(self, t3: T3, params: SamplingParams, generator: torch.Generator | None = None, *,
                 forced: list[int] | None = None, record: bool = False):
        dev = t3.speech_head.weight.device
        self.params, self.generator = params, generator
        self.seen = torch.zeros(1, t3.cfg.speech_vocab, dtype=torch.bool, device=dev)
        self.seen[0, t3.cfg.start_speech] = True
        self._eos = torch.tensor([t3.cfg.stop_speech], device=dev)
        self.forced = forced
        self.recorded: list[torch.Tensor] | None = [] if record else None
        self.n = 0

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, guard=None) -> torch.Tensor:
        """logits (2, V) -> (1,) token id on the device. `guard(mixed) -> mixed` edits EOS."""
        mixed = cfg_mix(logits[0:1], logits[1:2], self.params.cfg_weight)
        if guard is not None:
            mixed = guard(mixed)
        if self.params.ignore_eos:
            mixed = mixed.index_fill(-1, self._eos, float("-inf"))
        proc = sampling_logits(mixed, self.seen, self.params)
        if self.recorded is not None:
            self.recorded.append(proc.softmax(-1)[0].cpu())
        if self.forced is not None:
            if self.n >= len(self.forced):
                raise IndexError(f"forced token list ran out after {self.n} steps")
            tok = torch.tensor([self.forced[self.n]], device=logits.device)
        else:
            tok = sample(proc, self.params, self.generator)
        self.n += 1
        self.seen.scatter_(1, tok.reshape(1, 1), True)
        return tok

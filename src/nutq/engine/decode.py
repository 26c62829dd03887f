"""T3 prefill and decode step as small functions over a static KV cache.

Each runs under inference mode by itself (a session's generator must not hold the mode across
its yields, where it would leak into the consumer). The functions are pure up to the cache they
write: positions are Python ints known on the host, and the fed-back token stays a device tensor,
so a step never waits for the previous token to reach the host. Sampling state stays on the
device as well (`row_sampler`).
"""

from __future__ import annotations

import torch

from ..models.t3 import T3

__all__ = ["prefill", "decode_step"]

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

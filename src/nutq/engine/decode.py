"""T3 prefill and decode step as small functions over a static KV cache.

Each runs under inference mode by itself (a session's generator must not hold the mode across
its yields, where it would leak into the consumer). The functions are pure up to the cache they
write: positions are Python ints known on the host, and the fed-back token stays a device tensor,
so a step never waits for the previous token to reach the host. Sampling state stays on the
device as well (`row_sampler`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models.t3 import T3

__all__ = ["prefill", "prefill_prompt", "prefill_many", "check_prompt", "decode_step"]

Probes = tuple[tuple[int, int], ...]


def _split(out, probes: Probes) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out if probes else (out, None)


@torch.inference_mode()
def prefill(t3: T3, cond: torch.Tensor, text_ids: torch.Tensor, cache, probes: Probes = ()):
    """Run [cond | text | BOS | BOS] for both CFG rows from position 0.

    Returns (logits (2, V) fp32 for the first speech token, probe attention or None, prefill length).
    """
    return prefill_prompt(t3, check_prompt(t3.prefill_embeds(cond, text_ids, cfg_rows=True), cache.max_len),
                          cache, probes)


@torch.inference_mode()
def prefill_prompt(t3: T3, embeds: torch.Tensor, cache, probes: Probes = ()):
    """`prefill` from the prompt's embeddings (2, L, C) (`T3.prefill_embeds`, checked to fit)."""
    h, attn = _split(t3.forward_hidden(embeds, 0, cache, probes=probes), probes)
    return t3.speech_logits(h[:, -1]).float(), attn, embeds.shape[1]


def check_prompt(embeds: torch.Tensor, max_len: int) -> torch.Tensor:
    """`embeds` (2, L, C) as is when its L positions fit a KV cache of `max_len` (leaving room for
    a token), else a ValueError."""
    if embeds.shape[1] >= max_len:
        raise ValueError(f"prompt of {embeds.shape[1]} positions does not fit a KV cache of {max_len}")
    return embeds


@torch.inference_mode()
def prefill_many(t3: T3, prompts: Sequence[torch.Tensor], caches: Sequence, probes: Probes = ()) -> list:
    """`prefill` of several sessions in one forward: `prompts` are their `prefill_embeds` (2, L_i, C)
    (checked to fit), `caches` their slots' views (2 rows each, any rows of a pool).

    The prompts are right-padded to the longest and run from position 0 with the plain causal
    mask, so a real position never attends to padding (it comes after it) and each session's
    outputs are its solo prefill's up to float rounding (other matmul and attention shapes). The
    forward writes into a scratch cache of 2n rows, copied into each session's own rows after:
    their slots need not be adjacent, and rows of the pool outside the batch (sessions decoding)
    must not be touched. Padding keys copied beyond a session's prompt are never read: a session
    writes a position before it attends to it.

    Returns, per session, what `prefill` returns: (logits (2, V) fp32, probe attention
    (n_probes, L_i, L_i) or None, L_i)."""
    lens = [p.shape[1] for p in prompts]
    longest, n = max(lens), len(prompts)
    x = torch.cat([F.pad(p, (0, 0, 0, longest - p.shape[1])) for p in prompts])  # (2n, longest, C)
    scratch = t3.new_cache(2 * n, longest, dtype=caches[0].k.dtype)
    out = t3.tfmr(x, torch.arange(longest, device=x.device), scratch, kv_len=longest, probes=probes,
                  probe_rows=slice(0, 2 * n, 2) if probes else None)
    h, attn = out if probes else (out, None)
    # each session's last prompt position is the query of its first token (host ints: no index tensor)
    logits = t3.speech_logits(torch.cat([h[2 * i:2 * i + 2, L - 1] for i, L in enumerate(lens)])).float()
    results = []
    for i, (cache, L) in enumerate(zip(caches, lens)):
        cache.k[:, :, :, :longest].copy_(scratch.k[:, 2 * i:2 * i + 2])
        cache.v[:, :, :, :longest].copy_(scratch.v[:, 2 * i:2 * i + 2])
        results.append((logits[2 * i:2 * i + 2], None if attn is None else attn[i, :, :L, :L], L))
    return results


@torch.inference_mode()
def decode_step(t3: T3, token: torch.Tensor, speech_pos: int, pos: int, cache, probes: Probes = ()):
    """Feed `token` ((1,) device tensor) at speech position `speech_pos`, absolute position `pos`.

    Returns (logits (2, V) fp32, probe attention or None). The learned speech position is read by
    slicing the table with a host int: no index tensor has to travel to the device.
    """
    e = t3.speech_emb(token.reshape(1, 1)) + t3.speech_pos_emb.emb.weight[speech_pos]
    h, attn = _split(t3.forward_hidden(e.expand(2, -1, -1), pos, cache, probes=probes), probes)
    return t3.speech_logits(h[:, -1]).float(), attn

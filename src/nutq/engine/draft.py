"""Drafts for speculative T3 decoding: a small T3-shaped model, and the runner that proposes tokens.

`DraftT3` is a short Llama stack (2-6 layers) of the target's width. It owns only its decoder
layers and final norm; the text/speech embeddings, learned positions and the speech head are the
target's, shared by reference and never trained (so the draft reads the same prompt embeddings and
speaks the same vocabulary at no memory cost). It has the target's call surface
(`forward_hidden`, `embed_speech`, `speech_logits`, `new_cache`), so `DraftRunner` drives either it
or the target itself (draft = target: the upper bound on acceptance).

File format (`draft.safetensors`, beside the checkpoint): the draft's own tensors under their module
names (`tfmr.layers.N.*`, `tfmr.norm.weight`), in any float dtype, and string metadata
`format = "nutq-t3-draft"`, `version = "2"`, `num_layers`, `intermediate_size`, `hidden_size`,
`num_heads`, `num_kv_heads`, `head_dim` (the target's width must match) and, when known,
`target_sample` (JSON: a few values of the T3 weights it was trained against, `target_sample`; a
target that is not that model in any precision is reported, not ignored).
Loading is strict: every tensor present with its shape, nothing extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ClientError, WeightLoadError
from ..models.llama import LlamaBackbone
from ..models.t3 import T3
from .alignment import AlignmentGuard, GuardConfig
from .sampling import SamplingParams, cfg_mix, sample, sampling_logits

__all__ = ["DraftConfig", "DraftT3", "DraftRunner", "DRAFT_FILE", "FORMAT", "save_draft", "load_draft",
           "resolve_draft", "target_mismatch", "target_sample"]

DRAFT_FILE = "draft.safetensors"
FORMAT = "nutq-t3-draft"
VERSION = "2"  # 1 identified its target by an exact hash, which a bf16 or quantized target failed
SAMPLES = 32  # values per tensor in `target_sample`
TARGET_TOLERANCE = 0.25


@dataclass(frozen=True)
class DraftConfig:
    num_layers: int = 4
    intermediate_size: int | None = None  # None: the target's

    def __post_init__(self):
        if not 1 <= self.num_layers <= 16:
            raise ValueError(f"a draft has 1..16 layers, got {self.num_layers}")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise ValueError("intermediate_size must be >= 1")


class DraftT3(nn.Module):
    """A few Llama layers over the target's embeddings and head (those stay the target's)."""

    def __init__(self, target: T3, cfg: DraftConfig = DraftConfig(), *, init_from_target: bool = True):
        super().__init__()
        self.cfg = cfg
        tl = target.cfg.llama
        self.llama = replace(tl, num_layers=cfg.num_layers, intermediate_size=cfg.intermediate_size or tl.intermediate_size,
                             vocab_size=1)
        self.tfmr = LlamaBackbone(self.llama)
        del self.tfmr.embed_tokens  # T3 never uses it; the draft does not carry it
        # Shared, frozen: kept out of this module's parameters and state dict on purpose.
        object.__setattr__(self, "target", target)
        w = target.speech_head.weight
        self.to(device=w.device, dtype=w.dtype)
        if init_from_target and self.llama.intermediate_size == tl.intermediate_size:
            self.init_from_target()

    def init_from_target(self) -> None:
        """Start from the target's first layers and its final norm: the untrained shortcut that a
        trained draft has to beat (and a far better start than noise)."""
        with torch.no_grad():
            for mine, theirs in zip(self.tfmr.layers, self.target.tfmr.layers):
                mine.load_state_dict(theirs.state_dict())
            self.tfmr.norm.load_state_dict(self.target.tfmr.norm.state_dict())

    @property
    def t3cfg(self):
        return self.target.cfg

    def embed_speech(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.target.embed_speech(tokens, positions)

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.target.speech_logits(hidden)

    def new_cache(self, batch: int, max_len: int):
        from ..models.llama import KVCache

        w = self.tfmr.norm.weight
        return KVCache(self.llama, batch, max_len, device=w.device, dtype=w.dtype)

    def forward_hidden(self, embeds: torch.Tensor, start_pos: int, cache, probes=()):
        if probes:
            raise ValueError("a small draft has no alignment heads to probe")
        T = embeds.shape[1]
        if start_pos + T > cache.max_len:
            raise ValueError(f"draft KV cache of {cache.max_len} positions cannot hold position {start_pos + T - 1}")
        input_pos = torch.arange(start_pos, start_pos + T, device=embeds.device)
        return self.tfmr(embeds, input_pos, cache, kv_len=start_pos + T)


# ---- file ---------------------------------------------------------------------------------------

def target_sample(t3: T3) -> dict[str, list[float]]:
    """A few values of the T3 weights a draft is trained against, kept in its file so that loading
    can tell whether a target is that model: `SAMPLES` strided values of every tensor outside the
    decoder layers and of the first and last layer's. Compared with a tolerance, not hashed, so the
    same weights in another precision (bf16/fp16 casts, int8/int4 weight-only quantization, as
    served on a GPU) still match a draft trained in fp32."""
    last = t3.cfg.llama.num_layers - 1
    out = {}
    for name, t in sorted(t3.state_dict().items()):
        if ".layers." in name and f".layers.0." not in name and f".layers.{last}." not in name:
            continue
        if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "dequantize"):
            t = t.dequantize()  # a torchao quantized weight
        flat = t.detach().reshape(-1)
        out[name] = flat[:: max(1, flat.numel() // SAMPLES)][:SAMPLES].float().cpu().tolist()
    return out


def target_mismatch(sample: dict[str, list[float]], t3: T3) -> str | None:
    """Why `t3` is not the model `sample` (`target_sample`) was taken from, or None when it is.

    Per tensor, the relative distance |a - b| / max(|a|, |b|) of the sampled values; the worst
    tensor decides. Measured on the tiny and the full-size random checkpoints: a bf16 or fp16 cast
    moves it by under 0.5 %, int8 weight-only quantization by 1 %, int4 (groups of 32) by up to 12 %;
    another initialisation by 129-145 %. `TARGET_TOLERANCE` sits between."""
    ours = target_sample(t3)
    worst, where = 0.0, ""
    for name, a in sample.items():
        b = ours.get(name)
        if b is None or len(b) != len(a):
            return f"it has {'no tensor' if b is None else 'another shape of'} {name}"
        a_, b_ = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        scale = max(float(a_.norm()), float(b_.norm()))
        d = float((a_ - b_).norm()) / scale if scale > 0 else 0.0
        if d > worst:
            worst, where = d, name
    return f"{where} differs by {worst:.1%} (at most {TARGET_TOLERANCE:.0%} is the same model)" if worst > TARGET_TOLERANCE else None


def _meta(draft: DraftT3, target: dict[str, list[float]] | None) -> dict[str, str]:
    c = draft.llama
    meta = {"format": FORMAT, "version": VERSION, "num_layers": str(c.num_layers),
            "intermediate_size": str(c.intermediate_size), "hidden_size": str(c.hidden_size),
            "num_heads": str(c.num_heads), "num_kv_heads": str(c.num_kv_heads), "head_dim": str(c.head_dim)}
    if target:
        meta["target_sample"] = json.dumps(target)
    return meta


def save_draft(draft: DraftT3, path: str | Path, *, target: dict[str, list[float]] | None = None) -> Path:
    """Write `draft` to `path` (atomically); `target`: `target_sample` of the T3 it was trained
    against, which loading then checks."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in draft.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=_meta(draft, target))
    tmp.replace(path)
    return path


def load_draft(path: str | Path, target: T3, *, check_target: bool = True) -> DraftT3:
    """Strictly load a draft for `target`. A missing or foreign file, a width that is not the
    target's, a tensor missing/extra/misshapen, or (with `check_target`) a draft trained against
    other T3 weights raises `WeightLoadError` saying which."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / DRAFT_FILE
    if not path.is_file():
        raise WeightLoadError(f"no draft file at {path} (train one with `nutq train draft`)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise WeightLoadError(f"{path} is not a readable safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise WeightLoadError(f"{path} is not a nutq T3 draft (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise WeightLoadError(f"{path} is a nutq T3 draft of version {meta.get('version')!r}; this nutq reads version "
                              f"{VERSION} (retrain it with `nutq train draft`)")
    tl = target.cfg.llama
    for key in ("hidden_size", "num_heads", "num_kv_heads", "head_dim"):
        if meta.get(key) != str(getattr(tl, key)):
            raise WeightLoadError(f"{path}: draft {key}={meta.get(key)} does not match the target's {getattr(tl, key)}")
    if check_target and meta.get("target_sample"):
        try:
            sample = json.loads(meta["target_sample"])
        except ValueError as e:
            raise WeightLoadError(f"{path}: bad draft metadata target_sample ({e})") from None
        why = target_mismatch(sample, target)
        if why:
            raise WeightLoadError(f"{path} was trained against other T3 weights: {why}")
    try:
        cfg = DraftConfig(int(meta["num_layers"]), int(meta["intermediate_size"]))
    except (KeyError, ValueError) as e:
        raise WeightLoadError(f"{path}: bad draft metadata ({e})") from None
    draft = DraftT3(target, cfg, init_from_target=False)
    expected = draft.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or extra or bad:
        raise WeightLoadError(f"{path}: missing {missing[:4]}, unexpected {extra[:4]}, misshapen {bad[:4]}")
    w = target.speech_head.weight
    draft.load_state_dict({k: v.to(w.device, w.dtype) for k, v in tensors.items()})
    return draft.eval()


def resolve_draft(spec: str, target: T3) -> "DraftT3 | str":
    """A draft named on the command line or in an `EngineConfig`: "target" (the target itself: the
    acceptance upper bound, not faster), "shortcut:N" (the target's first N layers, untrained), or
    a draft file / checkpoint directory holding one (strictly loaded for `target`)."""
    if spec == "target":
        return spec
    if spec.startswith("shortcut:"):
        try:
            return DraftT3(target, DraftConfig(int(spec.split(":", 1)[1]))).eval()
        except ValueError as e:
            raise ClientError(f"draft {spec!r}: want shortcut:N with N in 1..16 ({e})") from None
    return load_draft(spec, target)


# ---- proposing ----------------------------------------------------------------------------------

class _GuardState:
    """Roll an `AlignmentGuard` back to an earlier frame: its rows only ever grow, so a checkpoint
    is their count plus the few scalars (reaches into the guard's fields on purpose; it is the
    host reference guard, whose state is plain Python)."""

    FIELDS = ("frame", "text_position", "started", "complete", "completed_at")

    def __init__(self, g: AlignmentGuard):
        self.n_rows = len(g.rows)
        self.scalars = {f: getattr(g, f) for f in self.FIELDS}
        self.tokens, self.counts = list(g.tokens), dict(g.counts)

    def restore(self, g: AlignmentGuard) -> None:
        del g.rows[self.n_rows:]
        for f, v in self.scalars.items():
            setattr(g, f, v)
        g.tokens, g.counts = list(self.tokens), dict(self.counts)


class DraftRunner:
    """One utterance's draft state: its KV cache, the tokens it has consumed, its own guard.

    `propose` first feeds the committed tokens it has not consumed yet (one forward for all of
    them), then drafts k tokens one by one with the target's sampling chain (CFG mix, the same
    repetition penalty over everything emitted plus its own drafts, temperature, min_p, top_p,
    top_k) and returns them with the distributions they were drawn from. After a rejection the
    runner notices on the next call that its consumed tokens diverge from the committed ones and
    rewinds (the cache is position-addressed: stale slots are just overwritten).

    `guard` (only for a draft that has the alignment heads, i.e. the target itself) lets the draft
    see the guard's EOS edits too; without it the draft simply never knows about them, which costs
    acceptance at the few positions the guard acts on, never correctness.
    """

    def __init__(self, model, embeds: torch.Tensor, params: SamplingParams, max_len: int, *,
                 guard: GuardConfig | None = None, text_span: tuple[int, int] | None = None):
        self.model, self.params = model, params
        cfg = model.t3cfg if isinstance(model, DraftT3) else model.cfg
        self.bos, self.eos = cfg.start_speech, cfg.stop_speech
        self.L = embeds.shape[1]
        self.cache = model.new_cache(batch=2, max_len=max_len)
        self.probes = guard.heads if guard is not None else ()
        self.guard = AlignmentGuard(text_span, guard) if guard is not None else None
        self.consumed: list[int] = []  # speech tokens whose keys/values are in the cache, in order
        self.checkpoints: list[_GuardState] = []  # guard state before consuming token j
        with torch.inference_mode():
            out = model.forward_hidden(embeds, 0, self.cache, probes=self.probes)
            self._first = self._logits(out, [self.bos])  # for the first token, if it is drafted

    def _logits(self, out, fed: list[int]) -> torch.Tensor:
        """Output of a forward that consumed `fed` (the last len(fed) positions) -> the mixed,
        guarded logits (1, V) for the token after them."""
        h, attn = out if self.probes else (out, None)
        logits = self.model.speech_logits(h[:, -1]).float()
        mixed = cfg_mix(logits[0:1], logits[1:2], self.params.cfg_weight)
        if self.guard is not None:
            if self.guard.frame == 0:  # the prefill: its BOS queries give frame 0
                d = self.guard.observe(attn, fed[-1])
            else:
                T = attn.shape[1]
                for i, tok in enumerate(fed):  # observe each consumed position in order
                    self.checkpoints.append(_GuardState(self.guard))
                    d = self.guard.observe(attn[:, T - len(fed) + i:T - len(fed) + i + 1], tok)
            mixed = AlignmentGuard.apply(mixed, d, self.eos)
        if self.params.ignore_eos:
            mixed = mixed.index_fill(-1, torch.tensor([self.eos], device=mixed.device), float("-inf"))
        return mixed

    def _rewind(self, committed: list[int]) -> list[int]:
        """Forget consumed tokens from the first one that was not committed; return the committed
        tokens still to feed."""
        n = 0
        while n < len(self.consumed) and n < len(committed) and self.consumed[n] == committed[n]:
            n += 1
        if self.guard is not None and n < len(self.checkpoints):
            self.checkpoints[n].restore(self.guard)
            del self.checkpoints[n:]
        del self.consumed[n:]
        return committed[n:]

    def _feed(self, tokens: list[int]) -> torch.Tensor:
        n0 = len(self.consumed)
        dev = self.cache.k.device
        ids = torch.tensor([tokens], device=dev)
        pos = torch.arange(n0 + 1, n0 + 1 + len(tokens), device=dev)
        e = self.model.embed_speech(ids, pos).expand(2, -1, -1)
        out = self.model.forward_hidden(e, self.L + n0, self.cache, probes=self.probes)
        self.consumed.extend(tokens)
        return self._logits(out, tokens)

    @torch.inference_mode()
    def propose(self, committed: list[int], seen: torch.Tensor, k: int,
                generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor]:
        """Draft k tokens after `committed` (every speech token emitted so far, EOS excluded).

        `seen` (1, V) bool: the target's repetition-penalty set (not modified). Returns the drafts
        and q (k, V) float32, the distribution each was drawn from (one-hot for greedy).
        """
        pending = self._rewind(committed)
        if pending:
            mixed = self._feed(pending)
        elif not committed:
            mixed = self._first
        else:  # every committed token was drafted and consumed: a round always commits a new one
            raise RuntimeError("propose called twice without a new committed token")
        seen = seen.clone()
        drafts, qs = [], []
        for i in range(k):
            proc = sampling_logits(mixed, seen, self.params)
            tok = int(sample(proc, self.params, generator)[0])
            q = proc.softmax(-1)[0]
            if self.params.greedy:
                q = torch.zeros_like(q).index_fill_(0, torch.tensor([tok]), 1.0)
            drafts.append(tok)
            qs.append(q)
            if tok == self.eos or i == k - 1:
                break  # nothing follows an EOS; the last draft need not be fed
            seen[0, tok] = True
            mixed = self._feed([tok])
        return drafts, torch.stack(qs)

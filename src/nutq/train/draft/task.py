"""The draft's training task: match the target's *processed* next-token distribution.

Speculative sampling accepts a draft token with probability min(1, p/q), so the expected acceptance
at a position is sum_x min(p(x), q(x)) = 1 - TV(p, q), where p is what the target actually samples
from: the CFG-mixed logits after the repetition penalty (over BOS and every earlier token),
temperature, min_p, top_p and top_k. The loss is therefore KL(p || q) on exactly that p (not on raw
logits), with q the draft's CFG-mixed logits under the same penalty and temperature (the truncation
filters are left out of q here so that q keeps a gradient everywhere p has mass). The alignment
guard only edits EOS at a few positions and is not modelled.

Sequences are teacher-forced on the prepared corpus' speech tokens, laid out exactly as inference
feeds them: [cond | SOT text EOT | BOS BOS | s_0 .. s_{n-1}] with speech positions 0, 0, 1..n, both
CFG rows (the unconditional one with the text embeddings zeroed).
"""

from __future__ import annotations

import torch

from ...engine.draft import DraftT3
from ...engine.sampling import SamplingParams, cfg_mix, repetition_penalty, sampling_logits
from ...models.t3 import T3
from ..t3.loss import _TrainingKV

__all__ = ["DraftTask", "inference_embeds", "seen_prefix", "draft_metrics"]


def inference_embeds(t3: T3, ex, max_speech: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(embeds (2, L + n, C), speech tokens (n,), L) of one prepared example, n <= max_speech."""
    cfg = t3.cfg
    dev = t3.speech_head.weight.device
    speech = ex.speech_tokens[:max_speech].to(dev)
    text = torch.cat([torch.tensor([cfg.start_text]), ex.text_tokens, torch.tensor([cfg.stop_text])]).to(dev)
    cond = t3.conditioning(ex.ve_embedding.reshape(1, -1), ex.prompt_speech_tokens.reshape(1, -1), 0.5)
    prompt = t3.prefill_embeds(cond, text, cfg_rows=True)
    sp = t3.embed_speech(speech.reshape(1, -1), torch.arange(1, speech.numel() + 1, device=dev)).expand(2, -1, -1)
    return torch.cat([prompt, sp.to(prompt.dtype)], dim=1), speech, prompt.shape[1]


def seen_prefix(t3: T3, speech: torch.Tensor) -> torch.Tensor:
    """(n + 1, V) bool: at query t (predicting token t) the ids the penalty counts: BOS, s_<t."""
    V = t3.cfg.speech_vocab
    marks = torch.zeros(speech.numel() + 1, V, dtype=torch.bool, device=speech.device)
    marks[0, t3.cfg.start_speech] = True
    marks[torch.arange(1, speech.numel() + 1, device=speech.device), speech] = True
    return marks.cumsum(0) > 0


def _speech_logits(model, embeds: torch.Tensor, L: int) -> torch.Tensor:
    """Logits (2, n + 1, V) at the queries that predict speech tokens 0..n."""
    T = embeds.shape[1]
    llama = model.llama if isinstance(model, DraftT3) else model.cfg.llama
    backbone = model.tfmr
    cache = _TrainingKV(llama, 2, T, device=embeds.device, dtype=embeds.dtype)
    h = backbone(embeds, torch.arange(T, device=embeds.device), cache, kv_len=T)
    return model.speech_logits(h[:, L - 1:]).float()


def target_probs(t3: T3, embeds, L, seen, params: SamplingParams) -> torch.Tensor:
    with torch.no_grad():
        lg = _speech_logits(t3, embeds, L)
        return sampling_logits(cfg_mix(lg[0], lg[1], params.cfg_weight), seen, params).softmax(-1)


def draft_log_probs(draft: DraftT3, embeds, L, seen, params: SamplingParams) -> torch.Tensor:
    lg = _speech_logits(draft, embeds, L)
    x = repetition_penalty(cfg_mix(lg[0], lg[1], params.cfg_weight), seen, params.repetition_penalty)
    return (x / params.temperature).log_softmax(-1)


def draft_metrics(p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean KL(p || q), mean expected acceptance sum_x min(p, q)) over positions."""
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1)
    return kl.mean(), torch.minimum(p, log_q.exp()).sum(-1).mean()


class DraftTask:
    kind = "draft"

    def __init__(self, t3: T3, draft: DraftT3, val, params: SamplingParams, max_speech: int = 128,
                 val_generated=None):
        """`val`: held-out corpus examples; `val_generated`: held-out target generations
        (`generated.py`), reported as `generated_loss` / `generated_acceptance`."""
        self.t3, self.draft, self.val, self.params, self.max_speech = t3, draft, val, params, max_speech
        self.val_generated = val_generated
        self.device = t3.speech_head.weight.device
        for p in t3.parameters():
            p.requires_grad_(False)  # the target (and so the shared embeddings and head) is frozen

    def parameters(self):
        return self.draft.parameters()

    def collate(self, examples):
        return list(examples)

    def _example(self, ex):
        with torch.no_grad():
            embeds, speech, L = inference_embeds(self.t3, ex, self.max_speech)
            seen = seen_prefix(self.t3, speech)
            p = target_probs(self.t3, embeds, L, seen, self.params)
        return p, draft_log_probs(self.draft, embeds, L, seen, self.params)

    def loss(self, batch):
        kls, accs = zip(*(draft_metrics(*self._example(ex)) for ex in batch))
        kl = torch.stack(kls).mean()
        return kl, {"kl": float(kl.detach()), "acceptance": float(torch.stack(accs).detach().mean())}

    def evaluate(self) -> dict[str, float]:
        out = self._evaluate(self.val, "")
        if self.val_generated:
            out.update(self._evaluate(self.val_generated, "generated_"))
        return out

    def _evaluate(self, examples, prefix: str) -> dict[str, float]:
        with torch.no_grad():
            kls, accs = zip(*(draft_metrics(*self._example(examples[i])) for i in range(len(examples))))
        return {f"{prefix}loss": float(torch.stack(kls).mean()), f"{prefix}acceptance": float(torch.stack(accs).mean())}

    def state_dict(self):
        return {k: v.detach().clone() for k, v in self.draft.state_dict().items()}

    def load_state_dict(self, state):
        self.draft.load_state_dict(state)

    def train(self, mode: bool = True):
        self.draft.train(mode)
        return self

"""Golden T3 training losses and gradients from the official chatterbox-tts 0.1.7 (reference env).

Builds the official multilingual T3 with nutq's random weights (as tools/parity/t3.py does), feeds
a padded batch of 3 rows (different text and speech lengths) through the official `T3.forward`
(training=True) and `T3.loss`, and records the losses and the gradients of a few parameters:
  out.official.{text,speech}   `T3.loss()` as shipped, with its one crash fixed: it hands (B, L, V)
                               logits to `F.cross_entropy`, which wants classes on dim 1; the
                               wrapper below moves them there and changes nothing else
  out.next.{text,speech}       next-token CE over the official forward's logits (positions 0..n-2
                               predict tokens 1..n-1; same masks), the alignment inference uses
  grad.<objective>.<param>     gradients of text + speech loss (embedding tables: the used rows)
  out.text_lse / out.speech_lse  logsumexp of the official logits at every position, (B, L)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import common
import torch
import torch.nn.functional as F

PARAMS = ("tfmr.layers.0.self_attn.q_proj.weight", "tfmr.layers.0.mlp.down_proj.weight", "tfmr.norm.weight",
          "cond_enc.spkr_enc.weight", "cond_enc.emotion_adv_fc.weight", "cond_enc.perceiver.pre_attention_query",
          "cond_enc.perceiver.attn.to_k.weight")
ROW_PARAMS = ("text_emb.weight", "speech_emb.weight", "text_head.weight", "speech_head.weight",
              "text_pos_emb.emb.weight", "speech_pos_emb.emb.weight")


def _official_builder():
    spec = importlib.util.spec_from_file_location("parity_t3", Path(__file__).with_name("t3.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_official


def make_batch(hp, seed: int, prompt_len: int):
    g = torch.Generator().manual_seed(seed + 7)
    text_lens = torch.tensor([9, 14, 6])
    speech_lens = torch.tensor([23, 12, 30])
    B = len(text_lens)
    text = torch.full((B, int(text_lens.max())), hp.stop_text_token)
    speech = torch.full((B, int(speech_lens.max())), hp.stop_speech_token)
    for i in range(B):
        body = torch.randint(1, 2454, (int(text_lens[i]) - 2,), generator=g)
        body[body == hp.start_text_token] = 1
        text[i, :text_lens[i]] = torch.cat([torch.tensor([hp.start_text_token]), body, torch.tensor([hp.stop_text_token])])
        codes = torch.randint(0, 6561, (int(speech_lens[i]) - 2,), generator=g)
        speech[i, :speech_lens[i]] = torch.cat([torch.tensor([hp.start_speech_token]), codes,
                                                torch.tensor([hp.stop_speech_token])])
    speaker = torch.randn(B, 256, generator=g)
    speaker = speaker / speaker.norm(dim=1, keepdim=True)
    prompt = torch.randint(0, 6561, (B, prompt_len), generator=g)
    emotion = torch.tensor([0.5, 0.3, 0.9])
    return dict(text=text, text_lens=text_lens, speech=speech, speech_lens=speech_lens, speaker=speaker,
                prompt=prompt, emotion=emotion)


def _cond(b):
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    return T3Cond(speaker_emb=b["speaker"], cond_prompt_speech_tokens=b["prompt"],
                  emotion_adv=b["emotion"].view(-1, 1, 1))


_CROSS_ENTROPY = F.cross_entropy  # `t3mod.F` is torch.nn.functional itself: keep the original


def _class_dim_fixed_ce(logits, target, **kw):
    return _CROSS_ENTROPY(logits.transpose(1, 2), target, **kw)


def _next_ce(logits, tokens, lens):
    mask = torch.arange(tokens.shape[1])[None] >= lens[:, None]
    target = tokens.masked_fill(mask, -100)[:, 1:]
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100)


def grads(model, b, tensors, name):
    params = dict(model.named_parameters())
    for k in PARAMS:
        tensors[f"grad.{name}.{k}"] = params[k].grad.clone()
    rows = {"text_emb.weight": b["text"].unique(), "text_head.weight": b["text"].unique(),
            "speech_emb.weight": torch.cat([b["speech"], b["prompt"]], 1).unique(),
            "speech_head.weight": b["speech"].unique(),
            "text_pos_emb.emb.weight": torch.arange(b["text"].shape[1]),
            "speech_pos_emb.emb.weight": torch.arange(max(b["speech"].shape[1], b["prompt"].shape[1]))}
    for k in ROW_PARAMS:
        tensors[f"grad.{name}.{k}"] = params[k].grad[rows[k]].clone()
        tensors[f"rows.{k}"] = rows[k]


def main():
    ap = common.parser(__doc__)
    ap.add_argument("--prompt-len", type=int, default=20)
    args = ap.parse_args()
    from chatterbox.models.t3 import t3 as t3mod

    torch.manual_seed(args.seed)
    model, hp, _ = _official_builder()(args.size, args.seed)
    # Eval mode: the official Perceiver applies attention dropout (0.2) in train mode, which no two
    # implementations can draw alike; the Llama backbone has none. Gradients flow the same in eval.
    model.eval()
    b = make_batch(hp, args.seed, args.prompt_len)
    kw = dict(text_tokens=b["text"], text_token_lens=b["text_lens"], speech_tokens=b["speech"],
              speech_token_lens=b["speech_lens"])
    tensors = {f"in.{k}": v for k, v in b.items()}

    try:  # as shipped: record how it fails, so the fixture documents why the fix is needed
        model.loss(t3_cond=_cond(b), **kw)
        as_shipped = "ran"
    except RuntimeError as e:
        as_shipped = f"{type(e).__name__}: {e}"
    t3mod.F.cross_entropy = _class_dim_fixed_ce
    try:
        lt, ls = model.loss(t3_cond=_cond(b), **kw)
    finally:
        t3mod.F.cross_entropy = _CROSS_ENTROPY
    tensors["out.official.text"], tensors["out.official.speech"] = lt.detach(), ls.detach()
    model.zero_grad()
    (lt + ls).backward()
    grads_snapshot = {}
    grads(model, b, grads_snapshot, "official")

    model.zero_grad()
    out = model.forward(t3_cond=_cond(b), training=True, **kw)
    nt, ns = _next_ce(out.text_logits, b["text"], b["text_lens"]), _next_ce(out.speech_logits, b["speech"], b["speech_lens"])
    (nt + ns).backward()
    grads(model, b, grads_snapshot, "next")
    tensors.update(grads_snapshot)
    tensors["out.next.text"], tensors["out.next.speech"] = nt.detach(), ns.detach()
    tensors["out.text_lse"] = out.text_logits.detach().logsumexp(-1)
    tensors["out.speech_lse"] = out.speech_logits.detach().logsumexp(-1)
    common.save(args.out, tensors, {"size": args.size, "seed": args.seed, "prompt_len": args.prompt_len,
                                    "official_loss_as_shipped": as_shipped,
                                    "params": list(PARAMS), "row_params": list(ROW_PARAMS)})


if __name__ == "__main__":
    main()

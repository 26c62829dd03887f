"""Golden decisions of the official `AlignmentStreamAnalyzer` on recorded attention (reference env).

The official analyzer is driven unmodified: it gets a stand-in transformer (so its hooks attach to
nothing) and, before each `step`, the three heads' attention is put where its hooks would have put
it. Every case is a sequence of frames; frame 0 is the prefill (two BOS queries after the text),
each later frame one decode step.

Cases:
  t3           attention recorded from a tiny random-weight official T3 run (T3.inference, CFG,
               replayed tokens as in tools/parity/t3.py), `--steps` frames
  progress     one token per two frames up to completion, no bad ending
  jumps        jumps at the limits (-5 / -4 / +7 rejected, -3 / +6 accepted, one hidden by the
               official column mask)
  long_tail    attention stays on the last token after completion
  repetition   attention returns to earlier text after completion (alignment repetition)
  token_rep    fed tokens repeat twice and three times in a row (and BOS twice at the start)
  short_text   S = 5: EOS never suppressed (the official crashes once an S <= 5 text completes,
               so the position stays below S - 3)
  boundary     S = 6: the shortest text with suppression, completes and checks repetition
  false_start  diffuse attention, then attention on the last tokens, then a clean start
  heads        the three heads disagree (their mean decides)

Per case <c>:
  in.<c>.span     (2,)            text span (i, j) in the prefill
  in.<c>.prefill  (3, L, L)       frame 0 attention per head (L = prefill length)
  in.<c>.steps    (N-1, 3, L+N-1) frame k >= 1: the one query's attention over kv_len = L + k,
                                  zero-padded on the right
  in.<c>.tokens   (N,)            token fed at each frame (BOS first)
  in.<c>.logits   (N, V)          logits handed to `step` (V = 16, EOS = 15)
  out.<c>.logits  (N, V)          logits `step` returned
  out.<c>.position / started / complete (N,)   analyzer state after each step
For t3 also in.t3.speaker / prompt / text / forced, so nutq can re-run the same T3 loop.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import common
import torch

V, EOS, BOS = 16, 15, 6561
N_HEADS = 3
COND = 3  # conditioning positions before the text in synthetic prefills


class _StandInTfmr(torch.nn.Module):
    """Just enough of a transformer for the analyzer's constructor to attach its hooks to."""

    def __init__(self, n_layers=14):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Module() for _ in range(n_layers))
        for layer in self.layers:
            layer.self_attn = torch.nn.Identity()


def run_official(span, prefill, steps, tokens, logits):
    """Drive a fresh official analyzer through the frames; return its outputs per frame."""
    from chatterbox.models.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer

    an = AlignmentStreamAnalyzer(_StandInTfmr(), None, text_tokens_slice=tuple(span), eos_idx=EOS)
    L = prefill.shape[-1]
    out_logits, pos, started, complete = [], [], [], []
    for k in range(len(tokens)):
        attn = prefill if k == 0 else steps[k - 1][:, None, :L + k]  # (3, T, kv_len)
        an.last_aligned_attns = list(attn)
        out_logits.append(an.step(logits[k:k + 1].clone(), next_token=int(tokens[k]))[0])
        pos.append(int(an.text_position))
        started.append(an.started)
        complete.append(an.complete)
    return {"logits": torch.stack(out_logits), "position": torch.tensor(pos),
            "started": torch.tensor(started), "complete": torch.tensor(complete)}


# ---- synthetic cases: text-span rows per frame, embedded in full attention rows ----

def _rows(S, peaks, value=0.8, bg=0.01):
    """(len(peaks), S) rows with `value` at each peak column over a small background."""
    r = torch.full((len(peaks), S), bg)
    r[torch.arange(len(peaks)), torch.tensor(peaks)] = value
    return r


def _embed(span_rows, S, g):
    """Per-frame text rows -> (span, prefill (3, L, L), steps (N-1, 3, L+N-1)).

    span_rows: frame 0 as (3, 2, S), later frames as (3, S). Positions outside the text get small
    random attention so a slicing error would show."""
    i, j = COND, COND + S
    L = j + 2
    N = len(span_rows)
    prefill = torch.rand(N_HEADS, L, L, generator=g) * 0.02
    prefill[:, j:, i:j] = span_rows[0]
    steps = torch.zeros(N - 1, N_HEADS, L + N - 1)
    for k in range(1, N):
        steps[k - 1, :, :L + k] = torch.rand(N_HEADS, L + k, generator=g) * 0.02
        steps[k - 1, :, i:j] = span_rows[k]
    return torch.tensor([i, j]), prefill, steps


def _path_case(S, path, g, value=0.8, bg=0.01, tokens=None):
    """Frames whose attention peaks at path[k] (frame 0: both BOS rows at path[0]), same in all heads."""
    r = _rows(S, path, value, bg)
    frames = [torch.stack([r[0], r[0]]).expand(N_HEADS, 2, S)] + [r[k].expand(N_HEADS, S) for k in range(1, len(path))]
    return (*_embed(frames, S, g), _tokens(len(path)) if tokens is None else torch.tensor(tokens))


def _tokens(n):
    return torch.tensor([BOS] + [100 + k for k in range(n - 1)])  # never two alike


def synthetic_cases(g):
    cases = {}
    progress = [min(k // 2, 11) for k in range(22)]  # S = 12: completes at position 9, stops before a tail
    cases["progress"] = _path_case(12, progress, g)
    # peaks: 0..10, then 5 (-5 rejected), 6 (-4 rejected), 7 (-3 accepted), 14 (+7 rejected),
    # 13 (+6 accepted), 17 at frame 16 (masked: the argmax falls to column 0, rejected), 16, ...
    jumps = list(range(11)) + [5, 6, 7, 14, 13, 17, 16, 17, 18, 19]
    cases["jumps"] = _path_case(20, jumps, g)
    cases["long_tail"] = _path_case(8, [0, 1, 2, 3, 4, 5] + [7] * 12, g)
    cases["repetition"] = _path_case(14, list(range(12)) + [2] * 9, g, value=0.9)
    # BOS fed again first: two alike but only 2 tokens seen, which the official does not count
    tokens = [BOS, BOS, 5, 6, 6, 7, 8, 8, 8, 9, 10, 11, 11, 12, 13]
    cases["token_rep"] = _path_case(12, [min(k // 2, 8) for k in range(len(tokens))], g, tokens=tokens)
    cases["short_text"] = _path_case(5, [0, 0, 1, 1, 0, 1, 1, 1, 0, 1], g)
    cases["boundary"] = _path_case(6, [0, 1, 1, 2, 2, 3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1], g, value=0.9)

    # false start, S = 10: frames 0-5 diffuse (nothing reaches 0.5 on the first 4 tokens, the
    # argmax wanders), frames 6-9 still weak with attention 0.3 on the last tokens (visible from
    # frame 8 because of the column mask), then a clear start at the beginning of the text.
    S = 10
    diffuse = [_rows(S, [p], value=0.3, bg=0.05)[0] for p in (0, 1, 2, 3, 2, 4, 5, 6, 8, 9)]
    clean = _rows(S, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], value=0.8, bg=0.01)
    seq = diffuse + list(clean)
    frames = [torch.stack([seq[0], seq[0]]).expand(N_HEADS, 2, S)] + [r.expand(N_HEADS, S) for r in seq[1:]]
    cases["false_start"] = (*_embed(frames, S, g), _tokens(len(seq)))

    # heads disagree: head 0 follows the text, heads 1-2 look elsewhere with less weight
    S, n = 12, 20
    follow = _rows(S, [min(k // 2, 11) for k in range(n)], value=0.9)
    wander = torch.rand(2, n, S, generator=g) * 0.4
    per_frame = torch.cat([follow[None], wander])  # (3, n, S)
    frames = [per_frame[:, :1].expand(N_HEADS, 2, S)] + [per_frame[:, k] for k in range(1, n)]
    cases["heads"] = (*_embed(frames, S, g), _tokens(n))
    return cases


# ---- attention recorded from the official T3 ----

def _load_t3_generator():
    spec = importlib.util.spec_from_file_location("parity_t3", Path(__file__).with_name("t3.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def record_t3(size, seed, steps):
    """Run the official T3.inference with the analyzer and record what its hooks captured."""
    from chatterbox.models.t3.inference import alignment_stream_analyzer as asa
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.models.tokenizers.tokenizer import MTLTokenizer

    t3gen = _load_t3_generator()
    torch.manual_seed(seed)
    model, hp, _ = t3gen.build_official(size, seed)
    ids = MTLTokenizer(str(common.private_vocab())).text_to_tokens(t3gen.TEXT, language_id="ar")[0]
    text = torch.cat([torch.tensor([hp.start_text_token]), ids, torch.tensor([hp.stop_text_token])])
    g = torch.Generator().manual_seed(seed + 1)
    speaker = torch.randn(1, 256, generator=g)
    speaker = speaker / speaker.norm()
    prompt = torch.randint(0, 6561, (1, hp.speech_cond_prompt_len), generator=g)
    forced = torch.randint(0, 6561, (steps,), generator=g)
    forced[9] = forced[8]  # one repeated token: the official forces EOS on it

    seen = {"attn": [], "tokens": [], "position": [], "span": None}
    orig_step, orig_multinomial = asa.AlignmentStreamAnalyzer.step, torch.multinomial

    def recording_step(self, logits, next_token=None):
        seen["span"] = self.text_tokens_slice
        seen["attn"].append(torch.stack(self.last_aligned_attns).clone())  # (3, T, kv_len)
        seen["tokens"].append(next_token)
        out = orig_step(self, logits, next_token=next_token)
        seen["position"].append(int(self.text_position))
        return out

    replay = iter(forced.tolist())
    asa.AlignmentStreamAnalyzer.step = recording_step
    torch.multinomial = lambda p, num_samples=1, **_: torch.tensor([[next(replay)]])
    try:
        with torch.inference_mode():
            cond = T3Cond(speaker_emb=speaker, cond_prompt_speech_tokens=prompt, emotion_adv=0.5 * torch.ones(1, 1, 1))
            model.inference(t3_cond=cond, text_tokens=torch.stack([text, text]), max_new_tokens=steps,
                            temperature=0.8, cfg_weight=0.5, repetition_penalty=2.0, min_p=0.05, top_p=1.0)
    finally:
        torch.multinomial = orig_multinomial
        asa.AlignmentStreamAnalyzer.step = orig_step

    prefill = seen["attn"][0]
    L = prefill.shape[-1]
    n = len(seen["attn"])
    padded = torch.zeros(n - 1, N_HEADS, L + n - 1)
    for k, a in enumerate(seen["attn"][1:], start=1):
        padded[k - 1, :, :L + k] = a[:, 0]
    extra = {"speaker": speaker, "prompt": prompt, "text": text, "forced": forced}
    case = (torch.tensor(seen["span"]), prefill, padded, torch.tensor(seen["tokens"]))
    return case, extra, torch.tensor(seen["position"])


def main():
    from chatterbox.models.t3.inference.alignment_stream_analyzer import LLAMA_ALIGNED_HEADS

    ap = common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    logging.getLogger("chatterbox").setLevel(logging.ERROR)  # one warning per forced EOS otherwise

    g = torch.Generator().manual_seed(args.seed)
    t3_case, t3_extra, live_position = record_t3(args.size, args.seed, args.steps)
    cases = {"t3": t3_case, **synthetic_cases(g)}
    tensors = {f"in.t3.{k}": v for k, v in t3_extra.items()}
    for name, (span, prefill, steps, tokens) in cases.items():
        logits = torch.randn(len(tokens), V, generator=g)
        out = run_official(span, prefill, steps, tokens, logits)
        if name == "t3":  # replaying the recording must reproduce the live run
            assert torch.equal(out["position"], live_position), "replay differs from the live T3 run"
        tensors.update({f"in.{name}.span": span, f"in.{name}.prefill": prefill, f"in.{name}.steps": steps,
                        f"in.{name}.tokens": tokens, f"in.{name}.logits": logits})
        tensors.update({f"out.{name}.{k}": v for k, v in out.items()})
        forced = (out["logits"][:, EOS] == 2**15).sum().item()
        suppressed = ((out["logits"][:, EOS] == -(2**15)) & (out["logits"][:, 0] != -(2**15))).sum().item()
        print(f"{name:12s} S={int(span[1] - span[0]):3d} frames={len(tokens):3d} forced={forced} "
              f"suppressed={suppressed} positions={out['position'].tolist()}")
    common.save(args.out, tensors, {"size": args.size, "seed": args.seed, "steps": args.steps, "cases": list(cases),
                                    "vocab": V, "eos": EOS, "heads": [list(h) for h in LLAMA_ALIGNED_HEADS]})


if __name__ == "__main__":
    main()

"""Golden T3 outputs from the official chatterbox-tts 0.1.7 (run in the reference env).

Builds the official multilingual T3 (tiny: nutq's T3_TINY sizes; full: official sizes), fills it
with nutq's deterministic random weights, and runs the official `T3.inference` loop with CFG and
the alignment analyzer for N steps. `torch.multinomial` is replaced by a replay of fixed tokens so
the sequence is known in advance, and every backbone output and every sampling distribution is
recorded:
  out.cond       (1, 34, C)   conditioning embeddings  [speaker | perceiver | emotion]
  out.logits     (N+1, 2, V)  last-position speech logits of prefill and each step, rows (cond, uncond)
  out.probs      (N, V)       the distribution the official loop sampled from at each step
The official Perceiver hard-codes 1024 channels; for the tiny size it is rebuilt with the tiny width.
"""

from __future__ import annotations

import common  # noqa: F401  (sys.path, HF offline)
import torch

TEXT = "مرحبا بكم في نطق، كيف حالك اليوم؟"


def build_official(size: str, seed: int):
    from chatterbox.models.t3 import t3 as t3mod
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS
    from chatterbox.models.t3.modules import cond_enc
    from chatterbox.models.t3.modules.perceiver import Perceiver
    from chatterbox.models.t3.modules.t3_config import T3Config as OT3Config

    from nutq.models.random_init import randomize_module
    from nutq.models.t3 import T3_FULL, T3_TINY

    ours = T3_TINY if size == "tiny" else T3_FULL
    hp = OT3Config.multilingual()
    hp.max_text_tokens = ours.max_text_tokens
    hp.max_speech_tokens = ours.max_speech_tokens
    if size == "tiny":
        L = ours.llama
        name = "nutq_tiny"
        LLAMA_CONFIGS[name] = dict(
            LLAMA_CONFIGS["Llama_520M"], hidden_size=L.hidden_size, intermediate_size=L.intermediate_size,
            num_hidden_layers=L.num_layers, num_attention_heads=L.num_heads, num_key_value_heads=L.num_kv_heads,
            head_dim=L.head_dim,
        )
        hp.llama_config_name = name
        cond_enc.Perceiver = lambda: Perceiver(ours.perceiver_queries, L.hidden_size, L.hidden_size, ours.perceiver_heads)
    model = t3mod.T3(hp).eval()
    randomize_module(model, seed)
    return model, hp, ours


def main():
    ap = common.parser(__doc__)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    from chatterbox.models.t3.inference import t3_hf_backend
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.models.tokenizers.tokenizer import MTLTokenizer

    torch.manual_seed(args.seed)
    model, hp, ours = build_official(args.size, args.seed)
    tok = MTLTokenizer(str(common.private_vocab()))
    ids = tok.text_to_tokens(TEXT, language_id="ar")[0]
    text = torch.cat([torch.tensor([hp.start_text_token]), ids, torch.tensor([hp.stop_text_token])])

    g = torch.Generator().manual_seed(args.seed + 1)
    speaker = torch.randn(1, 256, generator=g)
    speaker = speaker / speaker.norm()
    prompt = torch.randint(0, 6561, (1, hp.speech_cond_prompt_len), generator=g)
    emotion = 0.5
    forced = torch.randint(0, 6561, (args.steps,), generator=g)
    # Make one step repeat the previous token so the analyzer's token-repetition check fires once.
    forced[7] = forced[6]

    logits, probs = [], []
    orig_forward = t3_hf_backend.T3HuggingfaceBackend.forward

    def recording_forward(self, *a, **k):
        out = orig_forward(self, *a, **k)
        logits.append(out.logits[:, -1].detach().clone())
        return out

    replay = iter(forced.tolist())
    orig_multinomial = torch.multinomial

    def replay_multinomial(p, num_samples=1, **_):
        probs.append(p[0].detach().clone())
        return torch.tensor([[next(replay)]], device=p.device)

    t3_hf_backend.T3HuggingfaceBackend.forward = recording_forward
    torch.multinomial = replay_multinomial
    try:
        with torch.inference_mode():
            cond = T3Cond(speaker_emb=speaker, cond_prompt_speech_tokens=prompt,
                          emotion_adv=emotion * torch.ones(1, 1, 1))
            cond_emb = model.prepare_conditioning(cond).clone()
            cond.cond_prompt_speech_emb = None  # let inference recompute it as generate() would
            model.inference(t3_cond=cond, text_tokens=torch.stack([text, text]), max_new_tokens=args.steps,
                            temperature=0.8, cfg_weight=0.5, repetition_penalty=2.0, min_p=0.05, top_p=1.0)
    finally:
        torch.multinomial = orig_multinomial
        t3_hf_backend.T3HuggingfaceBackend.forward = orig_forward

    common.save(args.out, {
        "in.speaker": speaker, "in.prompt": prompt, "in.text": text, "in.forced": forced,
        "out.cond": cond_emb, "out.logits": torch.stack(logits), "out.probs": torch.stack(probs),
    }, {"size": args.size, "seed": args.seed, "steps": args.steps, "text": TEXT, "emotion": emotion,
        "cfg_weight": 0.5, "temperature": 0.8, "repetition_penalty": 2.0, "min_p": 0.05, "top_p": 1.0})


if __name__ == "__main__":
    main()

"""`nutq eval precision`: how far each precision takes each component from fp32, per language.

T3 (fp32, bf16, fp16, int8, int4): the fp32 model generates `steps` tokens for a prompt (seeded,
guard on); every other precision is then teacher-forced on exactly those tokens, and at each step
its sampling distribution is compared with fp32's: KL(fp32 || p), top-1 agreement, and whether
the alignment guard read the same text position. The distribution compared is the one the
sampler draws from before its min_p / top_p truncation (CFG mix, repetition penalty, temperature),
so that KL stays finite. The flow (bf16, fp16) and HiFT (bf16, fp16): the mel of the fp32 tokens
and its waveform against fp32, as SNR in dB, with the same noise and source randomness.

Random weights make these numerical deviations, not speech quality; on real weights the same
command measures the real model. The result (JSON) is what `nutq.engine.precision_guard` reads.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from ..checkpoints.files import CheckpointFiles
from ..engine.alignment import OFFICIAL
from ..engine.generate import iter_speech_tokens
from ..engine.sampling import SamplingParams
from ..engine.voice import load_conds
from ..models.loading import DTYPES
from ..models.quant import load_t3
from ..models.registry import configs_from_sidecar, load_component

__all__ = ["PROMPTS", "T3_PRECISIONS", "VOCODER_PRECISIONS", "measure"]

PROMPTS = {
    "ar": "مرحبا، أنا نطق، مساعدك الصوتي. كيف يمكنني مساعدتك اليوم؟",
    "en": "Hello, I am Nutq, your voice assistant. How can I help you today?",
    "fr": "Bonjour, je suis Nutq, votre assistant vocal. Comment puis-je vous aider aujourd'hui ?",
}
T3_PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
VOCODER_PRECISIONS = ("bf16", "fp16")


def _snr_db(ref: torch.Tensor, x: torch.Tensor) -> float:
    ref, x = ref.double().flatten(), x.double().flatten()
    err = (ref - x).pow(2).sum().item()
    return math.inf if err == 0 else 10 * math.log10(ref.pow(2).sum().item() / err)


def _run(t3, cond, ids, steps: int, params: SamplingParams, forced=None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    infos = list(iter_speech_tokens(t3, cond.to(t3.speech_emb.weight.dtype), ids, params, guard=OFFICIAL,
                                    generator=gen, forced_tokens=forced, record_probs=True))
    return [i.token for i in infos], torch.stack([i.probs.float() for i in infos]), [i.text_position for i in infos]


def measure(files: CheckpointFiles, *, languages=tuple(PROMPTS), t3_precisions=T3_PRECISIONS,
            vocoder_precisions=VOCODER_PRECISIONS, steps: int = 200, seed: int = 0, log=print) -> dict:
    """The deviation table: {"t3": {lang: {prec: {...}}}, "flow": {lang: {prec: snr}}, "hift": ...}."""
    from ..text.tokenizer import MTLTokenizer

    if files.conds is None:
        raise ValueError(f"{files.root}: the precision table uses the built-in voice (conds.pt), which is missing")
    cfgs = configs_from_sidecar(files.sidecar)
    tok = MTLTokenizer.from_file(files.tokenizer)
    voice = load_conds(files.conds)
    # ignore_eos is refused by the plain loop: a huge min length is not needed, since random
    # weights rarely stop; a real model that stops early yields fewer steps (reported as "steps").
    params = SamplingParams(max_new_tokens=steps, min_p=0.0, top_p=1.0)
    t3_ref = load_t3(files.root, cfgs["t3"], "fp32")
    cfg = t3_ref.cfg
    refs = {}
    out: dict = {"steps": steps, "seed": seed, "t3": {}, "flow": {}, "hift": {}}
    for lang in languages:
        ids = torch.tensor([cfg.start_text, *tok.encode(PROMPTS[lang], lang), cfg.stop_text])
        with torch.inference_mode():
            cond = t3_ref.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
        refs[lang] = (ids, cond, *_run(t3_ref, cond, ids, steps, params, seed=seed))
    for prec in t3_precisions:
        t0 = time.perf_counter()
        t3 = t3_ref if prec == "fp32" else load_t3(files.root, cfgs["t3"], prec)
        for lang in languages:
            ids, cond, tokens, p_ref, pos_ref = refs[lang]
            with torch.inference_mode():
                cond_p = t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
            _, p, pos = _run(t3, cond_p, ids, steps, params, forced=tokens, seed=seed)
            kl = (p_ref * (p_ref.clamp_min(1e-30).log() - p.clamp_min(1e-30).log())).sum(-1)
            out["t3"].setdefault(lang, {})[prec] = {
                "steps": len(tokens),
                "kl_mean": kl.mean().item(), "kl_max": kl.max().item(),
                "top1_agreement": (p.argmax(-1) == p_ref.argmax(-1)).float().mean().item(),
                "guard_agreement": sum(a == b for a, b in zip(pos, pos_ref)) / len(pos_ref),
            }
        log(f"t3 {prec}: {time.perf_counter() - t0:.1f} s")
        if t3 is not t3_ref:
            del t3
    del t3_ref
    if vocoder_precisions:
        s3gen = load_component(files.root, "s3gen", cfgs["s3gen"])
        for lang in languages:
            tokens = [t for t in refs[lang][2] if t < cfg.num_valid_speech]
            toks = torch.tensor(tokens).reshape(1, -1)
            t_mel = 2 * (voice.gen.prompt_token.shape[-1] + toks.shape[-1])
            noise = torch.randn(1, 80, t_mel, generator=torch.Generator().manual_seed(seed))
            with torch.inference_mode():
                mel = s3gen.flow_mel(toks, voice.gen, noise=noise)
                wav, _ = s3gen.mel2wav.inference(mel, generator=torch.Generator().manual_seed(seed))
                for prec in vocoder_precisions:
                    dt = DTYPES[prec]
                    flow = copy.deepcopy(s3gen)
                    flow.flow.to(dt)
                    out["flow"].setdefault(lang, {})[prec] = _snr_db(mel, flow.flow_mel(toks, voice.gen, noise=noise))
                    del flow
                    hift = copy.deepcopy(s3gen.mel2wav).to(dt)
                    w, _ = hift.inference(mel, generator=torch.Generator().manual_seed(seed))
                    out["hift"].setdefault(lang, {})[prec] = _snr_db(wav, w.float())
                    del hift
            log(f"flow/hift {lang} done")
    return out


def markdown(result: dict) -> str:
    """One table per language (T3 rows, then the flow and HiFT SNR)."""
    lines = []
    for lang, rows in result["t3"].items():
        lines += [f"**{lang}** (T3 teacher-forced over {result['steps']} steps; flow/HiFT SNR vs fp32)", "",
                  "| component | precision | KL mean (nats) | KL max | top-1 agreement | guard agreement | SNR (dB) |",
                  "|---|---|---|---|---|---|---|"]
        for prec, m in rows.items():
            lines.append(f"| T3 | {prec} | {m['kl_mean']:.2e} | {m['kl_max']:.2e} | {m['top1_agreement']:.3f} "
                         f"| {m['guard_agreement']:.3f} | |")
        for comp in ("flow", "hift"):
            for prec, snr in result[comp].get(lang, {}).items():
                lines.append(f"| {'HiFT' if comp == 'hift' else 'flow'} | {prec} | | | | | {snr:.1f} |")
        lines.append("")
    return "\n".join(lines)


def default_output(files: CheckpointFiles) -> Path:
    from ..engine.precision_guard import MEASURED_FILE

    return files.root / MEASURED_FILE

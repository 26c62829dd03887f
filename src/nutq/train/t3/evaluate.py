"""`nutq eval t3`: the base and the fine-tuned T3 side by side on held-out data.

Writes to OUT/:
  report.json   held-out loss and speech-token top-1 accuracy per dialect for both models, and the
                tuned-minus-base differences (so "no regression on MSA" is a number)
  report.md     the same as a table
  samples/      N WAVs per dialect from each model (same text, voice and seed), and index.html to
                listen to them A/B in a browser
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from ...engine.voice import Voice
from ...models.s3gen.model import RefDict
from .metrics import heldout_metrics
from .trainer import load_base_t3

__all__ = ["eval_t3", "example_voice"]


def example_voice(ex) -> Voice:
    """The conditioning the example was trained with, as an inference voice."""
    pf = ex.flow_prompt_tokens.long()[None]
    gen = RefDict(pf, torch.tensor([pf.shape[1]]), ex.flow_prompt_mel.float()[None], ex.xvector.float()[None])
    return Voice(ex.ve_embedding.float()[None], ex.prompt_speech_tokens.long()[None], 0.5, gen)


def _metrics(model_dir, dataset, batch_size: int, device: str) -> dict:
    model, _ = load_base_t3(model_dir, device)
    with torch.no_grad():
        return heldout_metrics(model.eval(), dataset, batch_size=batch_size)


def _table(report: dict) -> str:
    rows = ["| dialect | n | base loss | tuned loss | Δ loss | base acc | tuned acc | Δ acc |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d, delta in report["delta"].items():
        b, t = report["base"][d], report["tuned"][d]
        rows.append(f"| {d} | {b['n']} | {b['loss']:.4f} | {t['loss']:.4f} | {delta['loss']:+.4f} | "
                    f"{b['speech_acc']:.4f} | {t['speech_acc']:.4f} | {delta['speech_acc']:+.4f} |")
    return "\n".join(rows) + "\n"


def _samples(base_dir, tuned_dir, dataset, out: Path, per_dialect: int, max_tokens: int, seed: int) -> list[dict]:
    import soundfile as sf

    from ...tts import SAMPLE_RATE, TTS

    chosen: dict[str, list[int]] = {}
    for i in range(len(dataset)):
        ex = dataset[i]
        if len(chosen.setdefault(ex.dialect, [])) < per_dialect:
            chosen[ex.dialect].append(i)
    rows = [{"dialect": d, "index": i} for d, idx in sorted(chosen.items()) for i in idx]
    out.mkdir(parents=True, exist_ok=True)
    for label, model_dir in (("base", base_dir), ("tuned", tuned_dir)):
        tts = TTS.from_local(model_dir)
        try:
            for row in rows:
                ex = dataset[row["index"]]
                wav = tts.synthesize(ex.text, ex.language, example_voice(ex), seed=seed, max_new_tokens=max_tokens,
                                     normalize=False, watermark=False)
                name = f"{row['dialect']}-{ex.id}-{label}.wav"
                sf.write(out / name, wav, SAMPLE_RATE)
                row.update({label: name, "id": ex.id, "text": ex.text})
        finally:
            tts.close()
    return rows


def _html(rows: list[dict]) -> str:
    def audio(name):
        return f'<audio controls preload="none" src="{html.escape(name)}"></audio>'

    body = "\n".join(f"<tr><td>{html.escape(r['dialect'])}</td><td dir=\"rtl\">{html.escape(r['text'])}</td>"
                     f"<td>{audio(r['base'])}</td><td>{audio(r['tuned'])}</td></tr>" for r in rows)
    return ("<!doctype html><meta charset=\"utf-8\"><title>nutq eval t3: base vs tuned</title>\n"
            "<h1>Base (A) vs fine-tuned (B)</h1><p>Same text, voice and seed for both.</p>\n"
            "<table border=\"1\" cellpadding=\"4\"><tr><th>dialect</th><th>text</th><th>A: base</th>"
            f"<th>B: tuned</th></tr>\n{body}\n</table>\n")


def eval_t3(base_dir, tuned_dir, prepared, out_dir, *, split: str = "val", samples: int = 2, batch_size: int = 4,
            max_tokens: int = 400, seed: int = 0, device: str = "cpu") -> dict:
    from ..data.prepared import PreparedDataset

    dataset = PreparedDataset(prepared, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = _metrics(base_dir, dataset, batch_size, device)
    tuned = _metrics(tuned_dir, dataset, batch_size, device)
    delta = {d: {"loss": tuned[d]["loss"] - base[d]["loss"], "speech_acc": tuned[d]["speech_acc"] - base[d]["speech_acc"]}
             for d in ["all"] + sorted(k for k in base if k != "all")}
    report = {"base_model": str(base_dir), "tuned_model": str(tuned_dir), "prepared": str(prepared), "split": split,
              "objective": "next", "base": base, "tuned": tuned, "delta": delta}
    if samples > 0:
        rows = _samples(base_dir, tuned_dir, dataset, out / "samples", samples, max_tokens, seed)
        (out / "samples" / "index.html").write_text(_html(rows), encoding="utf-8")
        report["samples"] = rows
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / "report.md").write_text(f"# nutq eval t3 ({split} split)\n\nbase: {base_dir}\ntuned: {tuned_dir}\n\n"
                                   + _table(report), encoding="utf-8")
    return report

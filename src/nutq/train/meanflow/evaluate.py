"""`nutq eval meanflow`: how close a distilled decoder comes to the 10-step teacher.

On held-out examples, each decoder renders the same tokens, voice prompt and noise through
`Flow.inference` (the inference path itself); the teacher's 10-step guided mel is the reference.
Decoders compared: the student at 2 and 1 steps; the teacher's own naive shortcuts, guided Euler
with 2 steps on the cosine grid and on the linear grid, and 1 step (both grids are [0, 1] then);
and Resemble's distilled decoder when its file is given or sits in the teacher's directory. For
each: log-mel L1 over the generated frames, the mean level per frequency band and the spectral
tilt relative to the teacher (few-step flows are known to lose energy around 3–6 kHz), and the
flow time per render (encoder + solver, batch 1). The JSON report holds all of it; a PNG plots it
when matplotlib is installed; `--samples DIR` writes paired WAVs for a listening test.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nutq.audio.melbank import hz_to_mel, mel_to_hz
from nutq.models.s3gen.cfm import EulerCFG, MeanFlowEuler, linear_time_grid

from .inputs import FlowInputs, example_noise
from .teacher import CFG_RATE, guided_euler

__all__ = ["LinearEulerCFG", "evaluate", "run_eval", "plot_report", "BANDS_HZ", "band_levels", "tilt_db_per_khz"]

BANDS_HZ = (0, 1000, 2000, 3000, 6000, 8000)
DB = 20.0 / math.log(10.0)  # the mel is ln(magnitude): dB = 20·log10 = DB·ln


@dataclass(frozen=True)
class LinearEulerCFG:
    """Guided Euler (as `EulerCFG`) on the linear grid k/n instead of the cosine one."""

    n_timesteps: int = 2
    cfg_rate: float = CFG_RATE

    def __call__(self, estimator, z, mu, mask, spks, cond):
        fi = FlowInputs(mu, mask, spks, cond, mask)
        return guided_euler(estimator, z, fi, linear_time_grid(self.n_timesteps, device=mu.device), self.cfg_rate)[-1]


def _bin_freqs(n_mels: int = 80, fmax: float = 8000.0) -> np.ndarray:
    """Centre frequencies (Hz) of the S3Gen mel bins (Slaney scale, 0–8 kHz)."""
    return mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(fmax), n_mels + 2))[1:-1]


def band_levels(mel: torch.Tensor) -> dict[str, float]:
    """Mean level (dB) per band of a (80, T) log-mel."""
    f = _bin_freqs(mel.shape[0])
    per_bin = mel.float().mean(1).numpy() * DB
    return {f"{lo // 1000}-{hi // 1000}kHz": float(per_bin[(f >= lo) & (f < hi)].mean())
            for lo, hi in zip(BANDS_HZ[:-1], BANDS_HZ[1:])}


def tilt_db_per_khz(mel: torch.Tensor) -> float:
    """Slope of the time-averaged spectrum (dB) against frequency (kHz), least squares."""
    f = _bin_freqs(mel.shape[0]) / 1000.0
    return float(np.polyfit(f, mel.float().mean(1).numpy() * DB, 1)[0])


def _decoders(teacher, student, resemble) -> dict:
    """name -> (S3Gen whose flow renders, solver)."""
    d = {"teacher10": (teacher, EulerCFG(10)),
         "student2": (student, MeanFlowEuler(2)), "student1": (student, MeanFlowEuler(1)),
         "teacher_euler2_cosine": (teacher, EulerCFG(2)), "teacher_euler2_linear": (teacher, LinearEulerCFG(2)),
         "teacher_euler1": (teacher, EulerCFG(1))}
    if resemble is not None:
        d.update({"resemble2": (resemble, MeanFlowEuler(2)), "resemble1": (resemble, MeanFlowEuler(1))})
    return d


def _render(s3gen, solver, e, noise) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    mel = s3gen.flow.inference(e.speech_tokens[None], None, e.flow_prompt_tokens[None], None, e.flow_prompt_mel[None],
                               e.xvector[None], finalize=True, noise=noise, solver=solver)
    return mel[0].float().cpu(), time.perf_counter() - t0


def _write_wavs(teacher, mels: dict, name: str, out: Path, seed: int) -> None:
    import soundfile as sf

    from nutq.audio.fade import apply_trim_fade

    out.mkdir(parents=True, exist_ok=True)
    for method in ("teacher10", "student2", "student1"):
        gen = torch.Generator().manual_seed(seed)  # the same HiFT source for every decoder
        wav, _ = teacher.mel2wav.inference(mels[method][None].to(teacher.dtype), generator=gen)
        sf.write(out / f"{name}.{method}.wav", apply_trim_fade(wav)[0].cpu().numpy(), 24_000, subtype="PCM_16")


def evaluate(teacher, student, dataset, *, resemble=None, max_examples: int = 16, seed: int = 1234,
             samples_dir: str | Path | None = None, max_samples: int = 8) -> dict:
    """The report (a JSON-able dict). teacher/student/resemble: loaded S3Gen modules; dataset: the
    held-out PreparedDataset split. Every decoder gets example i's noise `example_noise(seed, i, 0)`."""
    n = min(len(dataset), max_examples)
    if n == 0:
        raise ValueError("no held-out examples to evaluate")
    decoders = _decoders(teacher, student, resemble)
    per = {k: {"l1": [], "seconds": [], "bands": [], "tilt": []} for k in decoders}
    weights = []
    for i in range(n):
        e = dataset[i]
        noise = example_noise(seed, i, 0, 2 * (e.flow_prompt_tokens.numel() + e.speech_tokens.numel()))[None]
        mels = {}
        for name, (s3gen, solver) in decoders.items():
            mels[name], seconds = _render(s3gen, solver, e, noise)
            per[name]["seconds"].append(seconds)
        ref = mels["teacher10"]
        ref_bands, ref_tilt = band_levels(ref), tilt_db_per_khz(ref)
        weights.append(ref.shape[-1])
        for name, mel in mels.items():
            per[name]["l1"].append(float((mel - ref).abs().mean()))
            per[name]["bands"].append({b: v - ref_bands[b] for b, v in band_levels(mel).items()})
            per[name]["tilt"].append(tilt_db_per_khz(mel) - ref_tilt)
        if samples_dir is not None and i < max_samples:
            _write_wavs(teacher, mels, e.id, Path(samples_dir), seed + i)
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    methods = {}
    for name, p in per.items():
        methods[name] = {
            "mel_l1": float(np.dot(w, p["l1"])),  # per generated value, frames-weighted over examples
            "mel_l1_per_example": p["l1"],
            "band_db_vs_teacher": {b: float(np.dot(w, [d[b] for d in p["bands"]])) for b in p["bands"][0]},
            "tilt_db_per_khz_vs_teacher": float(np.dot(w, p["tilt"])),
            "flow_ms_median": 1000.0 * float(np.median(p["seconds"])),
        }
    def ratio(a: str, b: str) -> float:
        return methods[a]["mel_l1"] / max(methods[b]["mel_l1"], 1e-12)

    best2 = min(("teacher_euler2_cosine", "teacher_euler2_linear"), key=lambda k: methods[k]["mel_l1"])
    return {
        "reference": "teacher10 (guided Euler, 10 cosine steps, cfg 0.7)",
        "examples": n, "frames": int(sum(weights)), "seed": seed, "methods": methods,
        # How many times closer to the teacher the student is than the teacher's best shortcut.
        "factor_2step": ratio(best2, "student2"), "baseline_2step": best2,
        "factor_1step": ratio("teacher_euler1", "student1"),
        "note": "1 step: the cosine and the linear grid are both [0, 1], so one teacher_euler1 row",
    }


def plot_report(report: dict, path: str | Path) -> Path | None:
    """PNG of L1 per decoder and band levels against the teacher; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods = {k: v for k, v in report["methods"].items() if k != "teacher10"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(range(len(methods)), [m["mel_l1"] for m in methods.values()])
    a.set_xticks(range(len(methods)), list(methods), rotation=30, ha="right")
    a.set_ylabel("log-mel L1 vs teacher10")
    for name, m in methods.items():
        bands = m["band_db_vs_teacher"]
        b.plot(list(bands), list(bands.values()), marker="o", label=name)
    b.axhline(0, color="k", lw=0.5)
    b.set_ylabel("band level - teacher10 (dB)")
    b.legend(fontsize=7)
    fig.suptitle(f"meanflow eval: {report['examples']} held-out examples")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_eval(teacher_dir, student_file, data_dir, *, split: str = "val", resemble=None, max_examples: int = 16,
             seed: int = 1234, out="meanflow_eval.json", samples_dir=None, max_samples: int = 8,
             device="cpu") -> dict:
    """Load everything, evaluate, write the JSON report (and the PNG beside it when possible)."""
    from nutq.checkpoints.files import MEANFLOW_FILE, resolve
    from nutq.errors import CheckpointError
    from nutq.models.registry import configs_from_sidecar, load_meanflow
    from nutq.train.data.prepared import PreparedDataset

    from .teacher import load_teacher

    files = resolve(teacher_dir, allow_download=False)
    cfg = configs_from_sidecar(files.sidecar)["s3gen"]
    student_file = Path(student_file)
    if not student_file.is_file():
        raise CheckpointError(f"no student file at {student_file} (nutq train meanflow writes OUT/{MEANFLOW_FILE})")
    dataset = PreparedDataset(data_dir, split)
    dataset.check_checkpoint(files.root)
    teacher = load_teacher(files.root, device)
    student = load_meanflow(student_file, cfg, device=device)
    if resemble is None:
        local = files.root / MEANFLOW_FILE
        if local.is_file() and local.resolve() != student_file.resolve():
            resemble = local
    other = load_meanflow(resemble, cfg, device=device) if resemble is not None else None
    report = evaluate(teacher, student, dataset, resemble=other, max_examples=max_examples, seed=seed,
                      samples_dir=samples_dir, max_samples=max_samples)
    report.update(teacher=str(files.root), student=str(student_file), resemble=str(resemble) if resemble else None,
                  split=split)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot_report(report, out.with_suffix(".png"))
    report["plot"] = str(png) if png else None
    out.write_text(json.dumps(report, indent=1))
    return report

"""`nutq train meanflow`: distil the 10-step guided S3Gen decoder into a 2- and 1-step student.

The generic machinery (data order, AdamW + warmup/cosine, accumulation, clipping, bf16 autocast on
CUDA, exact-resume checkpoints, signals, JSONL/TensorBoard logs, tqdm) is `nutq.train.loop`; this
module plugs a `MeanflowTask` into it. One micro-batch: the examples' flow inputs (frozen encoder),
their teacher paths (computed now, or read from `--cache-teacher`), `pairs_per_example` (t, r) pairs
per example, the student's average velocity on each and the masked interval loss. The teacher
always runs in fp32 (autocast off), so targets do not change with the student's precision.

Each example's k-th visit uses noise draw k (`inputs.example_noise(seed, index, k)`; a cache holds
`draws` of them and cycles). The visit counts, the pair sampler's generator, the EMA and the
student are the task's state, so a resumed run continues bit for bit (tested).

The EMA is a plain shadow copy updated after each optimizer step with decay
min(ema_decay, (1 + n)/(10 + n)) (the usual warm-up, so early exports are not the init); ten lines
here rather than `torch.optim.swa_utils.AveragedModel`, whose deep copy and buffers would add a
second module to checkpoint for the same arithmetic.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nutq.models.s3gen.cfm import cosine_time_grid

from .inputs import FlowBatch, batch_noise, collate, example_noise, flow_inputs
from .objective import PairConfig, PairSampler, consistency_target, masked_mse, student_forward
from .student import export_student, init_student
from .teacher import CFG_RATE, teacher_path

__all__ = ["DistillConfig", "MeanflowTask", "Indexed", "distil"]

KIND = "meanflow"


@dataclass(frozen=True)
class DistillConfig:
    teacher_steps: int = 10
    cfg_rate: float = CFG_RATE
    pairs_per_example: int = 4
    pairs: PairConfig = field(default_factory=PairConfig)
    consistency_weight: float = 0.0
    ema_decay: float = 0.999
    eval_examples: int = 8
    cache_draws: int = 4  # noise draws per example in a teacher cache (visits cycle through them)
    export: str = "ema"  # which weights `s3gen_meanflow.safetensors` gets: "ema" or "raw"

    def __post_init__(self):
        if self.pairs_per_example < 1:
            raise ValueError("pairs_per_example must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.export not in ("ema", "raw"):
            raise ValueError("export must be 'ema' or 'raw'")
        if self.cache_draws < 1:
            raise ValueError("cache_draws must be >= 1")
        if self.consistency_weight < 0:
            raise ValueError("consistency_weight must be >= 0")


class Indexed(torch.utils.data.Dataset):
    """dataset[i] -> (i, example): the loop hands collate examples only, the noise needs indices."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def _no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False)


class MeanflowTask:
    kind = KIND

    def __init__(self, teacher, n_train: int, val_set, cfg: DistillConfig, *, seed: int, cache=None):
        self.teacher, self.cfg, self.seed, self.cache = teacher, cfg, seed, cache
        self.device = teacher.flow.encoder_proj.weight.device
        self.student = init_student(teacher.flow.decoder.estimator)
        self.ema = {k: p.detach().clone() for k, p in self.student.named_parameters()}
        self.ema_updates = 0
        self.grid = cosine_time_grid(cfg.teacher_steps)
        self.sampler = PairSampler(cfg.pairs, self.grid, seed + 1)
        self.cons_gen = torch.Generator().manual_seed(seed + 2)
        self.visits = torch.zeros(n_train, dtype=torch.long)
        self.val_set = val_set
        self._val: list | None = None  # val inputs and paths: fixed, computed on first use

    # --- the TrainTask protocol -------------------------------------------------------------
    def parameters(self):
        return self.student.parameters()

    def train(self, mode: bool = True):
        self.student.train(mode)
        return self

    def collate(self, items):
        idx = [i for i, _ in items]
        draws = self.visits[idx].tolist()
        self.visits[idx] += 1
        return collate([e for _, e in items], idx), draws

    def _path(self, batch: FlowBatch, draws: list[int], fi, seed: int):
        with torch.no_grad(), _no_autocast(self.device):
            if self.cache is not None:
                return self.cache.path(batch, draws, self.grid, self.device)
            z = batch_noise(batch, seed, draws, self.device)
            return teacher_path(self.teacher.flow.decoder.estimator, z, fi, self.cfg.teacher_steps, self.cfg.cfg_rate)

    def loss(self, item):
        batch, draws = item
        batch = batch.to(self.device)
        with _no_autocast(self.device):
            fi = flow_inputs(self.teacher.flow, batch)
        path = self._path(batch, draws, fi, self.seed)
        p = self.cfg.pairs_per_example
        rows = torch.arange(batch.tokens.size(0), device=self.device).repeat_interleave(p)
        t, r, kind = (v.to(self.device) for v in self.sampler(rows.numel()))
        z_t, target = path.targets(t, r, rows)
        fir = fi.rows(rows)
        u = student_forward(self.student, z_t, t, r, fir)
        loss = masked_mse(u, target, fir.generated)
        metrics = {"loss_interval": float(loss.detach())}
        with torch.no_grad():
            for k, name in enumerate(("deployed", "equal", "random")):
                sel = kind == k
                if bool(sel.any()):
                    metrics[f"mse_{name}"] = float(masked_mse(u[sel], target[sel], fir.generated[sel]))
        if self.cfg.consistency_weight > 0:
            sel = r > t
            if bool(sel.any()):
                sub = fir.rows(sel.nonzero().squeeze(1))
                tc = consistency_target(self.student, z_t[sel], t[sel], r[sel], sub, self.cons_gen)
                lc = masked_mse(u[sel], tc, sub.generated)
                metrics["loss_consistency"] = float(lc.detach())
                loss = loss + self.cfg.consistency_weight * lc
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {f"student.{k}": v for k, v in self.student.state_dict().items()}
        sd.update({f"ema.{k}": v for k, v in self.ema.items()})
        sd.update(ema_updates=torch.tensor(self.ema_updates), visits=self.visits.clone(),
                  sampler_rng=self.sampler.state(), cons_rng=self.cons_gen.get_state())
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.student.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("student.")})
        for k in self.ema:
            self.ema[k].copy_(sd[f"ema.{k}"])
        self.ema_updates = int(sd["ema_updates"])
        self.visits.copy_(sd["visits"])
        self.sampler.set_state(sd["sampler_rng"])
        self.cons_gen.set_state(sd["cons_rng"])

    # --- EMA ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update_ema(self) -> None:
        n = self.ema_updates
        decay = min(self.cfg.ema_decay, (1 + n) / (10 + n))
        for k, p in self.student.named_parameters():
            self.ema[k].lerp_(p.detach(), 1.0 - decay)
        self.ema_updates += 1

    def export_module(self, which: str):
        """The student with the raw or the EMA weights (a copy when EMA)."""
        if which == "raw":
            return self.student
        m = init_student(self.teacher.flow.decoder.estimator)
        m.load_state_dict({**self.student.state_dict(), **self.ema})
        return m.eval()

    # --- held-out evaluation -----------------------------------------------------------------
    def _val_items(self):
        if self._val is None:
            self._val = []
            n = min(len(self.val_set), self.cfg.eval_examples) if self.val_set is not None else 0
            for i in range(n):
                batch = collate([self.val_set[i]], [i]).to(self.device)
                with _no_autocast(self.device):
                    fi = flow_inputs(self.teacher.flow, batch)
                    path = self._path_val(batch, fi, i)
                self._val.append((fi, path))
        return self._val

    def _path_val(self, batch, fi, i):
        z = example_noise(self.seed + 7919, i, 0, batch.n_frames)[None].to(self.device)
        with torch.no_grad():
            return teacher_path(self.teacher.flow.decoder.estimator, z, fi, self.cfg.teacher_steps, self.cfg.cfg_rate)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Deployed-interval MSE and 2/1-step render L1 against the 10-step teacher on val examples,
        for the student and its EMA."""
        items = self._val_items()
        if not items:
            return {}
        out = {}
        for label, model in (("", self.student), ("ema_", self.export_module("ema"))):
            mse, l1 = [], {2: [], 1: []}
            for fi, path in items:
                row = torch.zeros(1, dtype=torch.long, device=self.device)
                for a, b in ((0.0, 0.5), (0.5, 1.0), (0.0, 1.0)):
                    t, r = torch.tensor([a], device=self.device), torch.tensor([b], device=self.device)
                    z_t, target = path.targets(t, r, row)
                    mse.append(float(masked_mse(student_forward(model, z_t, t, r, fi), target, fi.generated)))
                for n in (2, 1):
                    x = path.states[0]
                    for k in range(n):
                        t = torch.full((1,), k / n, device=self.device)
                        r = torch.full((1,), (k + 1) / n, device=self.device)
                        x = x + (1.0 / n) * student_forward(model, x, t, r, fi)
                    g = fi.generated
                    l1[n].append(float(((x - path.states[-1]).abs() * g).sum() / (g.sum() * x.size(1))))
            out[f"{label}loss"] = sum(mse) / len(mse)
            out[f"{label}l1_2step"] = sum(l1[2]) / len(l1[2])
            out[f"{label}l1_1step"] = sum(l1[1]) / len(l1[1])
        return out


def distil(teacher_dir, data_dir, out_dir, loop_cfg, cfg: DistillConfig, *, cache_dir=None, device="cpu",
           on_step=None, resume: bool = True) -> dict:
    """Train (or resume) and, once the run is complete, export `out_dir/s3gen_meanflow.safetensors`.

    Returns a summary (also written to out_dir/distill.json)."""
    from nutq.checkpoints.files import MEANFLOW_FILE
    from nutq.engine.voice_format import model_fingerprint
    from nutq.train.data.prepared import PreparedDataset
    from nutq.train.loop import run

    from .cache import TeacherCache
    from .teacher import load_teacher

    out = Path(out_dir)
    teacher = load_teacher(teacher_dir, device)
    train_set = PreparedDataset(data_dir, "train")
    train_set.check_checkpoint(teacher_dir)
    val_set = PreparedDataset(data_dir, "val") if "val" in train_set.meta.get("splits", {}) else None
    cache = None
    t_cache = 0.0
    if cache_dir is not None:
        key = {"teacher": model_fingerprint(teacher_dir), "data": train_set.meta.get("checkpoint"),
               "examples": len(train_set), "seed": loop_cfg.seed, "draws": cfg.cache_draws,
               "teacher_steps": cfg.teacher_steps, "cfg_rate": cfg.cfg_rate}
        cache = TeacherCache(cache_dir, key)
        t0 = time.perf_counter()
        cache.build(train_set, teacher.flow, batch_size=loop_cfg.batch_size)
        t_cache = time.perf_counter() - t0
    task = MeanflowTask(teacher, len(train_set), val_set, cfg, seed=loop_cfg.seed, cache=cache)

    steps_run = []

    def step_hook(step, metrics):
        task.update_ema()
        steps_run.append(step)
        if on_step is not None:
            on_step(step, metrics)

    t0 = time.perf_counter()
    result = run(task, Indexed(train_set), loop_cfg, out, resume=resume, on_step=step_hook,
                 extra_state={"distill": asdict(cfg), "teacher": str(teacher_dir), "data": str(data_dir)})
    seconds = time.perf_counter() - t0
    summary = {"status": result.status, "step": result.step, "total_steps": result.total_steps,
               "train": result.train, "eval": result.eval, "train_seconds": seconds, "cache_seconds": t_cache,
               "steps_this_run": len(steps_run),
               "examples_per_s": len(steps_run) * loop_cfg.batch_size * loop_cfg.grad_accum / max(seconds, 1e-9),
               "checkpoint": str(result.checkpoint) if result.checkpoint else None}
    if result.status == "done":
        from nutq.checkpoints.files import resolve

        path = export_student(out / MEANFLOW_FILE, teacher, task.export_module(cfg.export),
                              metadata={"nutq": json.dumps({"distilled_from": model_fingerprint(teacher_dir),
                                                            "steps": result.step, "weights": cfg.export})},
                              teacher_file=resolve(teacher_dir, allow_download=False).s3gen)
        summary["export"] = str(path)
    (out / "distill.json").write_text(json.dumps(summary, indent=1))
    return summary


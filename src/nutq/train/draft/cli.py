"""`nutq train draft`: arguments, and the run (target loading, the loop, the saved draft file)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_train_parser", "train_draft"]


def add_train_parser(sub) -> None:
    p = sub.add_parser("draft", help="distil a small draft of T3 for speculative decoding",
                       description="Train a DraftT3 (its own few Llama layers over the target's frozen embeddings "
                                   "and head) to match the target's processed sampling distribution on a prepared "
                                   "corpus; writes draft.safetensors (see docs/speculative.md).")
    p.add_argument("--model-dir", required=True, help="the target checkpoint directory")
    p.add_argument("--data", required=True, help="a prepared dataset (nutq data prepare)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, logs); rerun to resume")
    p.add_argument("--save", default=None, help="where to write the draft (default: MODEL_DIR/draft.safetensors)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-speech", type=int, default=128, help="speech tokens per example used")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--cfg-weight", type=float, default=0.5)
    p.add_argument("--repetition-penalty", type=float, default=2.0)
    p.add_argument("--generated", type=int, default=0, metavar="K",
                   help="also train on K of the target's own generations per training utterance (sampled with "
                        "the settings above, cached in OUT); the evaluation then also reports acceptance on "
                        "generations from the validation utterances, what decoding will see")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_main)


def train_draft(model_dir, data, out, *, layers=4, steps=200, batch_size=4, lr=3e-4, warmup=20, max_speech=128,
                params=None, seed=0, device="cpu", save=None, progress=None, generated=0) -> dict:
    """Returns {"before": eval of the untrained draft (the target's first layers), "after": ...,
    "draft": path}. The run directory resumes exactly (nutq.train.loop). `generated`: target
    generations per training utterance added to the corpus (`generated.py`)."""
    import torch

    from ...checkpoints import files as ckfiles
    from ...engine.draft import DraftConfig, DraftT3, save_draft, target_sample
    from ...engine.sampling import SamplingParams
    from ...models.registry import configs_from_sidecar, load_component
    from ..data.errors import DataError
    from ..data.prepared import PreparedDataset
    from ..loop import LoopConfig, run
    from .generated import Examples, generated_examples
    from .task import DraftTask

    if generated < 0:
        raise DataError(f"--generated must be >= 0, got {generated}")
    files = ckfiles.resolve(model_dir, allow_download=False)
    torch.manual_seed(seed)
    t3 = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"], device=device).eval()
    train_set, val_set = PreparedDataset(data, "train"), PreparedDataset(data, "val")
    train_set.check_checkpoint(files.root)
    if not len(val_set):
        # the run's report (untrained shortcut vs trained draft) is measured on held-out examples
        raise DataError(f"{data} has no validation examples, which the draft's evaluation needs: prepare it with "
                        f"--val-fraction > 0 from audio of more than one speaker per dialect (speakers are split "
                        f"whole)")
    params = params or SamplingParams()
    val_generated, examples = None, train_set
    if generated:
        # the target's name in the cache key: its directory and weights (target_sample is cheap)
        source = json.dumps([str(files.root), str(Path(data).resolve()), target_sample(t3)])
        common = dict(max_speech=max_speech, params=params, source=source, progress=progress)
        examples = Examples(train_set, generated_examples(t3, train_set, generated, seed=seed,
                                                          cache=Path(out) / "generated_train.pt", **common))
        val_generated = generated_examples(t3, val_set, 1, seed=seed + 1, cache=Path(out) / "generated_val.pt",
                                           **common)
    draft = DraftT3(t3, DraftConfig(layers))
    task = DraftTask(t3, draft, val_set, params, max_speech, val_generated=val_generated)
    before = task.evaluate()
    cfg = LoopConfig(batch_size=batch_size, max_steps=steps, lr=lr, warmup_steps=warmup, seed=seed,
                     eval_every=max(1, steps // 4), progress=progress, weight_decay=0.0)
    result = run(task, examples, cfg, out, extra_state={"layers": layers, "max_speech": max_speech,
                                                        "generated": generated})
    path = save_draft(draft, save or files.root / "draft.safetensors", target=target_sample(t3))
    report = {"status": result.status, "steps": result.step, "before": before, "after": task.evaluate(),
              "draft": str(path)}
    (Path(out) / "draft_eval.json").write_text(json.dumps(report, indent=2))
    return report


def _main(args) -> int:
    from ...engine.sampling import SamplingParams

    params = SamplingParams(temperature=args.temperature, cfg_weight=args.cfg_weight,
                            repetition_penalty=args.repetition_penalty)
    report = train_draft(args.model_dir, args.data, args.out, layers=args.layers, steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, max_speech=args.max_speech,
                         params=params, seed=args.seed, device=args.device, save=args.save,
                         generated=args.generated)
    print(json.dumps(report, indent=2))
    return 0 if report["status"] == "done" else 130

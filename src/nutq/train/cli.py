"""`nutq train ...` and `nutq eval ...`: one subcommand per trainer, registered here.

Each trainer exposes `add_train_parser(sub)` / `add_eval_parser(sub)` in its own package, imported
when the CLI is built (argument parsing only; the machinery is imported when a command runs).
To add a trainer, append its module to `TRAINERS`.
"""

from __future__ import annotations

import importlib

# Modules exposing add_train_parser(sub) and/or add_eval_parser(sub).
# nutq.eval.cli (precision deviations) measures the runtime models, not a trainer, but shares the
# `eval` group so that there is one `nutq eval`.
TRAINERS: tuple[str, ...] = ("nutq.train.t3.cli", "nutq.train.meanflow.cli", "nutq.train.draft.cli",
                              "nutq.eval.cli")


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="fine-tune or distil a model (see `nutq train -h`)")
    train_sub = train.add_subparsers(dest="trainer", metavar="MODEL")
    evaluate = sub.add_parser("eval", help="evaluate a trained model against its base, or precisions against fp32")
    eval_sub = evaluate.add_subparsers(dest="trainer", metavar="MODEL")
    for name in TRAINERS:
        module = importlib.import_module(name)
        if hasattr(module, "add_train_parser"):
            module.add_train_parser(train_sub)
        if hasattr(module, "add_eval_parser"):
            module.add_eval_parser(eval_sub)

"""Export a fine-tuned T3 as a checkpoint directory in the official layout.

`OUT/model/` gets `t3_mtl23ls_v2.safetensors` (the official tensor names and shapes, LoRA merged,
fp32) and the base checkpoint's other files (hard links where the filesystem allows, else copies),
so it is a complete model directory: `nutq speak --model-dir OUT/model`, `nutq eval t3`, and the
official `T3` load it as they load the base. `trained.json` beside it says what was trained.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ...checkpoints import files as ckfiles
from ...models.registry import build
from ...models.t3 import T3
from .adapters import merge_lora

__all__ = ["export_t3", "TRAINED_FILE"]

TRAINED_FILE = "trained.json"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def export_t3(model: T3, base: ckfiles.CheckpointFiles, out_dir: str | Path, info: dict) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merge_lora(model)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        expected = build("t3", model.cfg).state_dict()
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in expected.items()}:
        raise RuntimeError("exported T3 does not have the official tensor layout")  # a bug, not user error
    tmp = out / (ckfiles.T3_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "nutq": "fine-tuned T3"})
    os.replace(tmp, out / ckfiles.T3_FILE)
    for name in (ckfiles.S3GEN_FILE, ckfiles.VE_FILE, ckfiles.TOKENIZER_FILE, ckfiles.CONDS_FILE,
                 ckfiles.SIDECAR_FILE, ckfiles.MEANFLOW_FILE):
        if (base.root / name).exists():
            _link_or_copy(base.root / name, out / name)
    (out / TRAINED_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    return out

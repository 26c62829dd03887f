"""Shared helpers for the parity-fixture generators.

Generators run inside the reference env (tools/refenv/build.sh), which has the official
chatterbox-tts 0.1.7 and torch but not nutq's dependencies. They import nutq's torch-only modules
(e.g. nutq.models.random_init) straight from src/ so both sides draw identical random weights.

Fixture format: one safetensors file per component in tests/golden/, tensors named
`in.*` (inputs), `out.*` (official outputs) and `meta.*` where useful; a JSON string in the
safetensors metadata under "meta" carries the config, seed and versions.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Generators are run as scripts, which puts tools/parity first on sys.path; a generator named like
# a package (s3tokenizer.py) would then shadow the official one. Drop that entry once `common`
# is imported, and put nutq's src/ in front instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
GOLDEN = REPO / "tests" / "golden"
# The real multilingual tokenizer vocabulary, as nutq ships it (MIT, src/nutq/assets/NOTICE.md).
VOCAB = REPO / "src" / "nutq" / "assets" / "grapheme_mtl_merged_expanded_v1.json"


def private_vocab() -> Path:
    """A copy of VOCAB in a fresh temporary folder (removed at exit), for the official
    `MTLTokenizer`: its constructor treats the vocabulary's folder as a hub cache and tries to
    fetch `Cangjie5_TC.json` into it, which must not write into the source tree."""
    tmp = tempfile.mkdtemp(prefix="nutq-vocab-")
    atexit.register(shutil.rmtree, tmp, True)
    return Path(shutil.copy(VOCAB, tmp))


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, required=True)
    return ap


def save(path: Path, tensors: dict, meta: dict) -> None:
    import chatterbox
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, official="chatterbox-tts " + getattr(chatterbox, "__version__", "0.1.7"),
                torch=torch.__version__)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
              metadata={"meta": json.dumps(meta, ensure_ascii=False)})
    print(f"wrote {path} ({path.stat().st_size/1e6:.2f} MB, {len(tensors)} tensors)")

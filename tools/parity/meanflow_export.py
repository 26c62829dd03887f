"""Load a distilled student (`nutq train meanflow`'s export) the way the official Turbo wrapper does.

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/meanflow_export.py --ckpt DIR --out FILE

DIR holds the student's `s3gen_meanflow.safetensors` (tiny sizes: the official parts are built at
nutq's tiny sizes, as tools/parity/e2e.py does; `--size full`: `S3Token2Wav(meanflow=True)`). It is
loaded with `load_state_dict(strict=True)`, then the official estimator runs on seeded inputs at
(t, r) = (0, .5) and (.5, 1), and its output is saved for nutq to compare with its own loading.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import common  # noqa: F401  (first: sys.path and HF offline, as the other generators)
import chatterbox.mtl_tts  # noqa: F401  (before the siblings, see meanflow.py)
import torch



def _meanflow_generator():
    """tools/parity/meanflow.py (common.py takes tools/parity off sys.path, so load it by file)."""
    spec = importlib.util.spec_from_file_location("_parity_meanflow", Path(__file__).with_name("meanflow.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="directory holding s3gen_meanflow.safetensors")
    a = ap.parse_args()
    mf = _meanflow_generator()
    model = mf.load_official_meanflow(a.size, a.ckpt, a.seed)  # strict, or it raises
    g = torch.Generator().manual_seed(a.seed)
    est_in = mf.sibling("flow").estimator_inputs(g, torch.tensor([0.0, 0.5]))
    est_in["r"] = torch.tensor([0.5, 1.0])
    with torch.inference_mode():
        out = model.flow.decoder.estimator(**est_in)
    common.save(a.out, {**{f"in.{k}": v for k, v in est_in.items()}, "out.est": out},
                {"size": a.size, "seed": a.seed, "ckpt": str(a.ckpt)})


if __name__ == "__main__":
    main()

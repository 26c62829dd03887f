"""Check that the official chatterbox-tts 0.1.7 T3 loads a T3 file strictly (reference env).

    t3_load.py FILE [--size tiny|full]

Builds the official multilingual T3 (tiny: nutq's T3_TINY sizes, as tools/parity/t3.py does) and
calls `load_state_dict(..., strict=True)`; exits non-zero naming the mismatch otherwise.
Used by the tests of `nutq train t3` on its exported `t3_mtl23ls_v2.safetensors`.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import common  # noqa: F401  (sys.path, HF offline)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file", type=Path)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    args = ap.parse_args()
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("parity_t3", Path(__file__).with_name("t3.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, _, _ = mod.build_official(args.size, 0)
    model.load_state_dict(load_file(str(args.file)), strict=True)
    print(f"official T3 loaded {args.file} strictly ({sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()

"""Shared test fixtures: golden parity files and tiny checkpoints made at test time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# One torch thread per test process: on a shared 2-core machine, torch's default of one thread
# per core makes OpenMP barriers spin against other processes and slows small models tens of
# times; CI's own cores gain little from a second thread on tiny models.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
# The real multilingual tokenizer vocabulary: the copy nutq ships (MIT, see src/nutq/assets/NOTICE.md).
FIXTURE_VOCAB = REPO / "src" / "nutq" / "assets" / "grapheme_mtl_merged_expanded_v1.json"
# The official state-dict listings, written by tools/parity/statedicts.py (see tests/fixtures/README.md).
STATEDICTS = REPO / "tests" / "fixtures" / "statedicts"


def read_fixture(path: Path):
    """(tensors, meta) from a parity fixture file (see tools/parity/common.py)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["meta"])
    return tensors, meta


def load_golden(name: str):
    """(tensors, meta) from tests/golden/<name>.safetensors, made by tools/parity/<name>.py."""
    path = GOLDEN / f"{name}.safetensors"
    if not path.exists():
        pytest.fail(f"missing parity fixture {path}; regenerate with tools/parity/make_golden.sh")
    return read_fixture(path)


def refenv_python() -> str | None:
    """The reference env's python if it has been built (tools/refenv/build.sh), else None."""
    root = Path(os.environ.get("NUTQ_REFENV", Path.home() / ".cache" / "nutq-refenv"))
    py = root / "venv" / "bin" / "python"
    return str(py) if py.exists() else None


def run_generator(script: str, out: Path, *args: str):
    """Run tools/parity/<script> in the reference env (for live, `refenv`-marked tests) and return
    the (tensors, meta) it wrote to `out`."""
    py = refenv_python()
    if py is None:
        pytest.skip("reference env not built (bash tools/refenv/build.sh)")
    subprocess.run([py, str(REPO / "tools" / "parity" / script), "--out", str(out), *args], check=True)
    return read_fixture(out)


def adjust_conv_post(hift, adjust: dict) -> None:
    """The HiFT `conv_post` change the parity generators make on both sides (tools/parity/hift.py):
    weight-norm magnitude scaled and log-magnitude biases shifted, for realistic amplitudes."""
    import torch

    conv_post = hift.conv_post
    with torch.no_grad():
        if hasattr(conv_post, "parametrizations"):
            conv_post.parametrizations.weight.original0.mul_(adjust["g_scale"])
        else:  # a loaded HiFT has its weight norm folded: weight = g·v/|v| scales with g
            conv_post.weight.mul_(adjust["g_scale"])
        conv_post.bias[: conv_post.bias.shape[0] // 2].add_(adjust["logmag_bias_shift"])


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    if not FIXTURE_VOCAB.exists():
        pytest.fail(f"tokenizer vocabulary fixture missing at {FIXTURE_VOCAB}")
    return FIXTURE_VOCAB


@pytest.fixture(scope="session")
def statedict_listing():
    """Parse a tests/fixtures/statedicts listing into {key: shape}, in file order (None-valued keys
    dropped)."""

    def parse(name: str, strip_prefix: str = "") -> dict[str, tuple[int, ...]]:
        path = STATEDICTS / name
        if not path.exists():
            pytest.fail(f"official state-dict listing missing at {path}; regenerate with tools/parity/statedicts.py")
        out = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] == "None" or not parts[0].startswith(strip_prefix):
                continue
            shape = tuple(int(x) for x in parts[1].strip("()").split(",") if x)
            out[parts[0][len(strip_prefix):]] = shape
        return out

    return parse


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """One random tiny checkpoint (official layout + sidecar, and a meanflow decoder) for the whole
    run; treat as read-only."""
    from nutq.checkpoints.make import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), size="tiny", seed=0, meanflow=True).root

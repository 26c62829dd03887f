"""nutq's Perth network equals Perth's own watermarker and detector (resemble-perth 1.0.1).

Golden: tests/golden/perth.safetensors from tools/parity/perth.py (Perth's `apply_watermark` and
`get_watermark(round=False)` with its shipped weights, on speech-like clips at 24, 32 and 16 kHz).
Marking: the same ops on the same weights, observed bit-identical (0.0); bound 1e-5. Detection:
Perth resamples with scipy in float32, nutq in float64 (`resample_poly`); observed 2e-7; bound 1e-4.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from nutq.audio import watermark as wm
from nutq.audio.perth import mark, score

from conftest import REPO, load_golden, refenv_python, run_generator

MARK_ATOL = 1e-5
SCORE_ATOL = 1e-4

pytestmark = pytest.mark.skipif(wm.checkpoint_dir() is None, reason="resemble-perth (a test dependency) is missing")


@pytest.fixture(scope="module")
def net():
    return wm.load_network(wm.checkpoint_dir())


def check(net, tensors, meta) -> dict[str, float]:
    errs = {}
    for name, clip in meta["clips"].items():
        wav, sr = tensors[f"in.wav.{name}"].numpy(), clip["sr"]
        want = tensors[f"out.marked.{name}"].numpy()
        got = mark(net, wav, sr)
        assert got.shape == want.shape, f"{name}: {got.shape} vs Perth's {want.shape}"
        errs[f"mark.{name}"] = float(np.abs(got - want).max())
        for kind, signal in (("marked", want), ("plain", wav)):
            errs[f"score_{kind}.{name}"] = abs(score(net, signal, sr) - float(tensors[f"out.score_{kind}.{name}"]))
    for k, e in errs.items():
        assert e <= (MARK_ATOL if k.startswith("mark") else SCORE_ATOL), f"{k}: {e:.3g} ({errs})"
    return errs


def test_marking_and_detection_equal_perths(net):
    tensors, meta = load_golden("perth")
    check(net, tensors, meta)
    # The fixture is meaningful: Perth tells marked from plain on every clip.
    for name in meta["clips"]:
        assert float(tensors[f"out.score_marked.{name}"]) > 0.9 and float(tensors[f"out.score_plain.{name}"]) < 0.2


def test_loaded_network_is_perths_checkpoint(net):
    import torch

    state = torch.load(wm.checkpoint_dir() / "perth_net_250000.pth.tar", map_location="cpu", weights_only=True)
    ours = net.state_dict()
    assert set(ours) == {k for k in state["model"] if not k.startswith("ap.")}
    assert all(torch.equal(ours[k], state["model"][k]) for k in ours)
    assert torch.equal(net.window, torch.hann_window(2048)), "Perth's STFT window is torch's periodic Hann"


@pytest.mark.refenv
def test_equals_perth_live(net, tmp_path):
    errs = check(net, *run_generator("perth.py", tmp_path / "perth.safetensors", "--seed", "7"))
    print("max abs diff vs Perth:", errs)


PERTH_DETECTS = r"""
import sys, warnings, contextlib, io, soundfile as sf
warnings.simplefilter("ignore")
from perth.perth_net.perth_net_implicit.perth_watermarker import PerthImplicitWatermarker
with contextlib.redirect_stdout(io.StringIO()):
    perth = PerthImplicitWatermarker()
for path in sys.argv[1:]:
    wav, sr = sf.read(path, dtype="float32")
    print(float(perth.get_watermark(wav, sr, round=False)))
"""


@pytest.mark.refenv
def test_nutq_speak_output_is_detected_by_perths_detector(tiny_checkpoint, tmp_path):
    py = refenv_python()
    if py is None:
        pytest.skip("reference env not built (bash tools/refenv/build.sh)")
    from nutq import cli

    marked, plain = tmp_path / "marked.wav", tmp_path / "plain.wav"
    args = ["speak", "مرحبا بكم في نطق", "--model-dir", str(tiny_checkpoint), "--max-tokens", "40", "--seed", "0"]
    assert cli.main([*args, "-o", str(marked)]) == 0
    assert cli.main([*args, "-o", str(plain), "--no-watermark"]) == 0
    out = subprocess.run([py, "-c", PERTH_DETECTS, str(marked), str(plain)], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split()
    assert float(out[0]) > 0.9 and float(out[1]) < 0.1, out

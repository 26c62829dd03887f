"""benchmarks/gpu_smoke.py: argument handling and the no-CUDA exit on CPU; the checks on a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lists_its_checks(smoke, capsys):
    assert smoke.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list(smoke.CHECKS)


@pytest.mark.parametrize("argv", [["--sessions", "0"], ["--only", "no_such_check"], ["--model-dir", "/no/such/dir"]])
def test_bad_arguments_are_refused(smoke, argv):
    with pytest.raises(SystemExit) as e:
        smoke.parse_args(argv)
    assert e.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_without_cuda_it_says_so_and_exits_2(smoke, capsys):
    assert smoke.main(["--only", "graph_replay_fp32"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_graph_replay_check_runs_its_comparison_on_cpu(smoke, monkeypatch):
    """On CPU the step runs eagerly (no graph): the check's comparison itself is exercised."""
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: None)
    assert smoke.graph_replay(torch.float32, "cpu")["relative_error"] <= 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_checks_pass_on_a_gpu(smoke):
    assert smoke.main(["--only", "graph_replay_fp32", "graph_replay_bf16", "sdpa_kernel", "inv_freq_bf16",
                       "second_device", "scheduler_e2e", "stage_clock", "scheduler_vs_solo", "host_step", "--sessions", "1", "8"]) == 0

"""Strict, low-memory weight loading (nutq.models.loading)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from nutq.errors import WeightLoadError
from nutq.models.loading import load_module, read_state_dict
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY


@pytest.fixture(scope="module")
def tiny_t3_file(tmp_path_factory):
    model = randomize_module(T3(T3_TINY), 3)
    path = tmp_path_factory.mktemp("w") / "t3.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


def test_loads_strictly_and_equals_the_source(tiny_t3_file):
    path, ref = tiny_t3_file
    m = load_module(lambda: T3(T3_TINY), path)
    for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    # Non-persistent RoPE buffers are rebuilt after the meta build.
    assert torch.equal(m.tfmr.inv_freq, ref.tfmr.inv_freq)
    assert not any(t.is_meta for t in list(m.parameters()) + list(m.buffers()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_selection(tiny_t3_file, dtype):
    path, ref = tiny_t3_file
    m = load_module(lambda: T3(T3_TINY), path, dtype=dtype)
    assert {p.dtype for p in m.parameters()} == {dtype}
    w, w_ref = m.speech_head.weight, ref.speech_head.weight
    assert torch.equal(w, w_ref.to(dtype))
    # RoPE frequencies are not rounded with the weights: the angles equal fp32's
    assert m.tfmr.inv_freq.dtype == torch.float32
    pos = torch.arange(1500)
    assert torch.equal(m.tfmr.rope(pos, torch.float32)[0], ref.tfmr.rope(pos, torch.float32)[0])


def test_missing_unexpected_and_misshaped_keys_are_named(tiny_t3_file):
    _, ref = tiny_t3_file
    sd = dict(ref.state_dict())
    del sd["tfmr.norm.weight"]
    sd["tfmr.extra.weight"] = torch.zeros(1)
    sd["text_head.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightLoadError) as e:
        load_module(lambda: T3(T3_TINY), sd)
    msg = str(e.value)
    assert "1 missing: tfmr.norm.weight" in msg
    assert "1 unexpected: tfmr.extra.weight" in msg
    assert "text_head.weight: file (3, 3) vs model (2454, 128)" in msg


def test_wrong_size_checkpoint_fails_loudly(tiny_t3_file):
    """A tiny file loaded as a full-size model must fail with shapes, not garbage."""
    from nutq.models.t3 import T3_FULL

    path, _ = tiny_t3_file
    with pytest.raises(WeightLoadError, match="wrong shape"):
        load_module(lambda: T3(T3_FULL), path)


def test_pt_files_and_the_model_wrapper(tmp_path, tiny_t3_file):
    _, ref = tiny_t3_file
    p = tmp_path / "wrapped.pt"
    torch.save({"model": [ref.state_dict()]}, p)
    sd = read_state_dict(p)
    assert torch.equal(sd["speech_head.weight"], ref.speech_head.weight)


PEAK_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from nutq.models.llama import LlamaConfig
    from nutq.models.loading import load_module
    from nutq.models.t3 import T3, T3Config

    def kb(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    cfg = T3Config(llama=LlamaConfig(num_layers=2), max_text_tokens=512, max_speech_tokens=1024)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[sys.argv[2]]
    with torch.device("meta"):  # first meta use imports torch's meta kernels (~80 MB): not weights
        T3(cfg)
    base = kb("VmRSS")
    m = load_module(lambda: T3(cfg), sys.argv[1], dtype=dtype)
    # Touch every weight so mmapped pages count too.
    with torch.no_grad():
        total = sum(float(p.sum()) for p in m.parameters())
    print((kb("VmHWM") - base) / os.path.getsize(sys.argv[1]))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_peak_memory_while_loading_is_bounded(tmp_path):
    """Loading a ~290 MB file peaks at <= 1.3x the file (fp32) and well under it as bf16."""
    from nutq.models.llama import LlamaConfig
    from nutq.models.t3 import T3Config

    cfg = T3Config(llama=LlamaConfig(num_layers=2), max_text_tokens=512, max_speech_tokens=1024)
    path = tmp_path / "t3.safetensors"
    save_file({k: v.contiguous() for k, v in randomize_module(T3(cfg), 0).state_dict().items()}, str(path))
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    ratios = {}
    for dtype in ("fp32", "bf16"):
        out = subprocess.run([sys.executable, str(script), str(path), dtype], capture_output=True, text=True, check=True)
        ratios[dtype] = float(out.stdout.strip().splitlines()[-1])
    assert ratios["fp32"] <= 1.3, ratios
    assert ratios["bf16"] <= 0.5 * 1.3 + 0.15, ratios  # bf16 weights are half the file

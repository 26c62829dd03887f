"""`nutq eval precision` measures (tiny, few steps) and the guard warns from what it measured."""

import json

from nutq.checkpoints.files import resolve
from nutq.engine.precision_guard import MEASURED_FILE, check
from nutq.eval.precision import markdown, measure


def test_measure_and_guard(tiny_checkpoint, tmp_path):
    res = measure(resolve(tiny_checkpoint), languages=("ar",), t3_precisions=("fp32", "bf16"),
                  vocoder_precisions=("fp16",), steps=6, log=lambda m: None)
    fp32, bf16 = res["t3"]["ar"]["fp32"], res["t3"]["ar"]["bf16"]
    assert fp32["kl_mean"] == 0 and fp32["top1_agreement"] == 1 and fp32["guard_agreement"] == 1
    assert bf16["kl_mean"] > 0  # bf16 does change the distribution
    assert 0 < res["flow"]["ar"]["fp16"] < float("inf") and 0 < res["hift"]["ar"]["fp16"] < float("inf")
    assert "| T3 | bf16 |" in markdown(res)
    # The guard names a configuration the measurement flags, and only that one.
    res["t3"]["ar"]["bf16"].update(kl_mean=1.0)
    (tmp_path / MEASURED_FILE).write_text(json.dumps(res))
    assert any("bf16 deviates" in w and "ar" in w for w in check(tmp_path, "bf16", None))
    assert check(tmp_path, "fp32", None) == []
    assert check(tmp_path / "none", "int8", None) and check(tmp_path / "none", "bf16", None) == []

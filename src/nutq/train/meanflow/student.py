"""The student: a meanflow estimator started from the teacher, and its export.

Only the estimator (the U-Net that the solver calls at every step) is trained; the token encoder,
CAMPPlus, HiFT and the S3 tokenizer stay the teacher's, so mu and the speaker input are the same
for both. At initialisation the student is the teacher's estimator with `time_embed_mixer` =
[I | 0]: the mixed time embedding is then emb(t) exactly, so u(x, t, r) = v(x, t) for every r
(tested). The export is the whole S3Gen in the layout of `s3gen_meanflow.safetensors`: the
teacher's tensors, the student's estimator in place of the teacher's, and the mixer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from nutq.models.s3gen.estimator import ConditionalDecoder

__all__ = ["init_student", "export_student", "MIXER_KEY", "ESTIMATOR_PREFIX"]

ESTIMATOR_PREFIX = "flow.decoder.estimator."
MIXER_KEY = ESTIMATOR_PREFIX + "time_embed_mixer.weight"


def init_student(teacher_estimator: ConditionalDecoder) -> ConditionalDecoder:
    """A trainable meanflow estimator equal to the teacher's at t (fp32, the teacher's device)."""
    if teacher_estimator.cfg.meanflow:
        raise ValueError("the teacher must be the 10-step (non-meanflow) estimator")
    device = teacher_estimator.final_proj.weight.device
    student = ConditionalDecoder(replace(teacher_estimator.cfg, meanflow=True)).to(device)
    missing, unexpected = student.load_state_dict(teacher_estimator.state_dict(), strict=False)
    if unexpected or missing != ["time_embed_mixer.weight"]:
        raise RuntimeError(f"student init: missing {missing}, unexpected {unexpected}")
    d = teacher_estimator.cfg.time_dim
    with torch.no_grad():
        student.time_embed_mixer.weight.copy_(torch.cat([torch.eye(d), torch.zeros(d, d)], dim=1))
    return student.float().train()


def export_student(path: str | Path, teacher_s3gen: nn.Module, student: ConditionalDecoder,
                   metadata: dict[str, str] | None = None, *, teacher_file: str | Path) -> Path:
    """Write `s3gen_meanflow.safetensors`: every key of the official meanflow S3Gen, in its order:
    the student's estimator, and everything else bit for bit from the teacher's file (`teacher_file`,
    its s3gen.pt). Not from the loaded teacher: loading rewrites parts for inference (HiFT's weight
    norm is folded), so its state dict no longer has the official names."""
    from safetensors.torch import save_file

    from nutq.models.loading import read_state_dict
    from nutq.models.registry import build_meanflow

    with torch.device("meta"):
        order = list(build_meanflow(teacher_s3gen.cfg).state_dict())
    base = read_state_dict(teacher_file)
    est = student.state_dict()
    out = {}
    for k in order:
        src = est[k[len(ESTIMATOR_PREFIX):]] if k.startswith(ESTIMATOR_PREFIX) else base[k]
        out[k] = src.detach().to("cpu", torch.float32 if src.is_floating_point() else src.dtype).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(out, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path

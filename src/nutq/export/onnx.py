"""`nutq export onnx DIR`: the checkpoint's compute graphs as ONNX files, plus a manifest.

Exporter: torch 2.13's `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript). The
TorchScript-based exporter still runs but is deprecated; the dynamo one is the maintained path and
turns the backbone's in-place cache writes into pure functions by itself. Every graph is fp32
(TensorRT builds fp16/bf16 engines from these files; ONNX Runtime on CPU runs fp32), with dynamic
batch and length axes. Files larger than 2 GB (full-size T3) keep their weights as external data
beside the graph (`<name>.onnx.data`), as ONNX requires.

The manifest (`nutq-onnx.json`, see `nutq.engine.ort_backend`) records the graphs, their inputs
and outputs, the T3 probe heads baked into the T3 graphs and the model sizes; the runtime checks
it against the checkpoint it is attached to.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import torch

from ..checkpoints.files import MEANFLOW_FILE, CheckpointFiles
from ..engine.alignment import OFFICIAL
from ..engine.ort_backend import FORMAT, MANIFEST, VERSION, graph_io
from ..models.registry import configs_from_sidecar, load_component, load_meanflow
from . import graphs

__all__ = ["export_onnx"]

log = logging.getLogger(__name__)


def _dims():
    from torch.export import Dim

    return Dim("batch", min=1, max=256), Dim


def _export(module, args, names, dynamic, path: Path, optimize: bool) -> None:
    inputs, outputs = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), args, dynamo=True, dynamic_shapes=dynamic, input_names=inputs,
                                    output_names=outputs, optimize=optimize, verbose=False)
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    program.save(str(path), external_data=size > 1.8e9)


def _t3_jobs(t3, probes):
    batch, Dim = _dims()
    cfg = t3.cfg
    c = cfg.dim
    seq, past = Dim("seq", min=2, max=cfg.max_text_tokens + cfg.max_speech_tokens), Dim("past", min=1, max=8192)
    L, H, D = cfg.llama.num_layers, cfg.llama.num_kv_heads, cfg.llama.head_dim
    kv = torch.zeros(L, 2, H, 9, D)
    yield ("t3_prefill", graphs.T3Prefill(t3, probes), (torch.randn(2, 9, c),),
           {"embeds": {0: batch, 1: seq}})
    kv_dims = {1: batch, 3: past}
    yield ("t3_decode", graphs.T3Decode(t3, probes), (torch.randn(2, 1, c), kv, kv.clone()),
           {"embeds": {0: batch}, "past_k": kv_dims, "past_v": kv_dims})


def _flow_jobs(s3gen, kind: str):
    batch, Dim = _dims()
    frames, tokens = Dim("frames", min=2, max=8192), Dim("tokens", min=2, max=4096)
    flow = s3gen.flow
    est = flow.decoder.estimator
    t = 12
    mel3 = {0: batch, 2: frames}
    est_args = (torch.randn(2, 80, t), torch.ones(2, 1, t), torch.randn(2, 80, t), torch.rand(2), torch.randn(2, 80),
                torch.randn(2, 80, t))
    est_dims = {"x": mel3, "mask": mel3, "mu": mel3, "t": {0: batch}, "spks": {0: batch}, "cond": mel3}
    if kind == "meanflow":
        yield ("estimator_meanflow", graphs.EstimatorMeanFlow(est), (*est_args, torch.rand(2)),
               {**est_dims, "r": {0: batch}})
        return
    yield "estimator_cfm", graphs.EstimatorCFM(est), est_args, est_dims
    width = flow.cfg.encoder.input_size
    yield ("flow_encoder", graphs.FlowEncoder(flow.encoder), (torch.randn(2, 7, width), torch.tensor([7, 5])),
           {"xs": {0: batch, 1: tokens}, "xs_lens": {0: batch}})
    hift = s3gen.mel2wav
    spf = hift.cfg.samples_per_frame
    mel = torch.randn(2, 80, 5)
    yield "hift_f0", graphs.HiFTF0(hift), (mel,), {"mel": mel3}
    with torch.no_grad():
        source = hift.source(hift.f0(mel), generator=torch.Generator().manual_seed(0))
    yield ("hift_decode", graphs.HiFTDecode(hift), (mel, source), {"mel": mel3, "source": {0: batch, 2: spf * frames}})


def export_onnx(files: CheckpointFiles, out_dir: str | Path, *, meanflow: bool | None = None,
                optimize: bool = True) -> dict:
    """Export the graphs of `files` into `out_dir` and write the manifest; returns the manifest.

    `meanflow`: also the distilled estimator (None: when the checkpoint has the file).
    `optimize=False` skips onnxscript's graph optimizer (faster export, same numbers: tests)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfgs = configs_from_sidecar(files.sidecar)
    probes = tuple(OFFICIAL.heads)
    manifest = {"format": FORMAT, "version": VERSION, "probes": [list(p) for p in probes],
                "t3": {"layers": cfgs["t3"].llama.num_layers, "kv_heads": cfgs["t3"].llama.num_kv_heads,
                       "head_dim": cfgs["t3"].llama.head_dim, "hidden": cfgs["t3"].dim},
                "samples_per_frame": cfgs["s3gen"].hift.samples_per_frame, "graphs": {}}

    def run(jobs):
        for name, module, args, dynamic in jobs:
            t0 = time.perf_counter()
            path = out / f"{name}.onnx"
            io = graph_io(name, probes)
            with torch.no_grad():
                _export(module, args, io, dynamic, path, optimize)
            manifest["graphs"][name] = {"file": path.name, "inputs": io[0], "outputs": io[1]}
            log.info("exported %s in %.1f s", name, time.perf_counter() - t0)

    run(_t3_jobs(load_component(files.root, "t3", cfgs["t3"], dtype=torch.float32), probes))
    run(_flow_jobs(load_component(files.root, "s3gen", cfgs["s3gen"], dtype=torch.float32), "cfm"))
    if meanflow is None:
        meanflow = (files.meanflow_file or files.root / MEANFLOW_FILE).is_file()
    if meanflow:
        run(_flow_jobs(load_meanflow(files.meanflow, cfgs["s3gen"], dtype=torch.float32), "meanflow"))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest

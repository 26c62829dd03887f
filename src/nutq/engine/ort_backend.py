"""Run the exported ONNX graphs (`nutq export onnx`) with ONNX Runtime in place of PyTorch modules.

`attach(t3, s3gen, onnx_dir)` returns a T3 stand-in for the plain decode loop (`iter_speech_tokens`)
and swaps S3Gen's flow estimator, flow encoder and HiFT's F0 predictor and decoder for graph
calls. What stays in PyTorch: T3's embeddings, conditioning and speech head, the sampling, the
alignment guard, HiFT's sine source (it draws the session's random numbers) and everything of
voice preparation. The T3 stand-in keeps a growing (not pooled) KV cache, so it serves the offline
`synthesize` path; streams keep the PyTorch T3 over the pooled cache.

The manifest `nutq-onnx.json` lists each graph with its input and output names (`graph_io` below
is the one definition of them, shared with the exporter), the T3 probe heads and the model sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import NutqError

__all__ = ["FORMAT", "VERSION", "MANIFEST", "graph_io", "OnnxBackendError", "OrtGraphs", "OrtT3", "attach"]

FORMAT = "nutq-onnx"
VERSION = 1
MANIFEST = "nutq-onnx.json"


class OnnxBackendError(NutqError, RuntimeError):
    """onnxruntime missing, or an export directory that does not fit the checkpoint."""


def graph_io(name: str, probes=()) -> tuple[list[str], list[str]]:
    """(input names, output names) of a graph."""
    kv_out = ["hidden", "present_k", "present_v"] + (["probe_attn"] if probes else [])
    est = ["x", "mask", "mu", "t", "spks", "cond"]
    table = {
        "t3_prefill": (["embeds"], kv_out),
        "t3_decode": (["embeds", "past_k", "past_v"], kv_out),
        "estimator_cfm": (est, ["velocity"]),
        "estimator_meanflow": (est + ["r"], ["velocity"]),
        "flow_encoder": (["xs", "xs_lens"], ["h", "h_mask"]),
        "hift_f0": (["mel"], ["f0"]),
        "hift_decode": (["mel", "source"], ["wav"]),
    }
    return table[name]


class OrtGraphs:
    """The sessions of one export directory, created on first use (CPU execution provider unless
    `providers` says otherwise, e.g. ["CUDAExecutionProvider"] with onnxruntime-gpu)."""

    def __init__(self, onnx_dir: str | Path, providers: list[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as e:
            raise OnnxBackendError(f"the onnxruntime backend needs onnxruntime (pip install 'nutq[onnx]'): {e}") from e
        self._ort = onnxruntime
        self.dir = Path(onnx_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise OnnxBackendError(f"{self.dir}: no {MANIFEST}; make one with `nutq export onnx {self.dir}`")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise OnnxBackendError(f"{path}: not a {FORMAT} v{VERSION} manifest")
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads or torch.get_num_threads()
        self._sessions: dict = {}

    def has(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    def session(self, name: str):
        if name not in self._sessions:
            if not self.has(name):
                raise OnnxBackendError(f"{self.dir}: the export has no {name} graph (re-run `nutq export onnx`)")
            opts = self._ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            file = self.dir / self.manifest["graphs"][name]["file"]
            self._sessions[name] = self._ort.InferenceSession(str(file), opts, providers=self.providers)
        return self._sessions[name]

    def run(self, name: str, *inputs) -> list[np.ndarray]:
        names = self.manifest["graphs"][name]["inputs"] if self.has(name) else graph_io(name)[0]
        feed = {n: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x) for n, x in zip(names, inputs)}
        return self.session(name).run(None, feed)


class _GrowingKV:
    """The stand-in's cache: the present keys/values of the last graph call (numpy)."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k = self.v = None
        self.length = 0


class OrtT3:
    """T3 for `iter_speech_tokens` whose backbone runs as the t3_prefill/t3_decode graphs.

    Everything but `forward_hidden` and `new_cache` is the PyTorch T3's (embeddings, speech head,
    config)."""

    def __init__(self, t3: nn.Module, graphs: OrtGraphs):
        m = graphs.manifest
        want = {"layers": t3.cfg.llama.num_layers, "kv_heads": t3.cfg.llama.num_kv_heads,
                "head_dim": t3.cfg.llama.head_dim, "hidden": t3.cfg.dim}
        if m["t3"] != want:
            raise OnnxBackendError(f"{graphs.dir}: exported for T3 sizes {m['t3']}, the checkpoint has {want}")
        self._t3, self._graphs = t3, graphs
        self._probes = [tuple(p) for p in m["probes"]]

    def __getattr__(self, name):
        return getattr(self._t3, name)

    def new_cache(self, batch: int, max_len: int, **_) -> _GrowingKV:
        return _GrowingKV(max_len)

    def forward_hidden(self, embeds: torch.Tensor, start_pos: int, cache: _GrowingKV, probes=()):
        T = embeds.shape[1]
        if start_pos != cache.length:
            raise ValueError(f"the onnxruntime T3 continues its cache at {cache.length}, not at {start_pos}")
        if start_pos + T > cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions cannot hold position {start_pos + T - 1}")
        missing = [p for p in probes if tuple(p) not in self._probes]
        if missing:
            raise OnnxBackendError(f"probe heads {missing} were not exported (the export has {self._probes})")
        x = embeds.float().cpu().numpy()
        if start_pos == 0:
            out = self._graphs.run("t3_prefill", x)
        else:
            if T != 1:
                raise ValueError("the onnxruntime T3 decodes one position per step after the prefill")
            out = self._graphs.run("t3_decode", x, cache.k, cache.v)
        cache.k, cache.v, cache.length = out[1], out[2], start_pos + T
        h = torch.from_numpy(out[0])[:, None]  # (B, 1, C): the last position, all the loop reads
        if not probes:
            return h
        attn = torch.from_numpy(out[3])[[self._probes.index(tuple(p)) for p in probes]]
        return h, attn


class OrtEstimator(nn.Module):
    """The flow estimator as a graph call, usable by the solvers (they read `cfg` and `dtype`)."""

    def __init__(self, cfg, graphs: OrtGraphs):
        super().__init__()
        self.cfg, self._graphs = cfg, graphs
        self._name = "estimator_meanflow" if cfg.meanflow else "estimator_cfm"
        graphs.session(self._name)  # fail at attach time, not at the first request

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, x, mask, mu, t, spks, cond, *, r=None, padded: bool = True):
        args = [x, mask, mu, t, spks, cond] + ([r] if self.cfg.meanflow else [])
        return torch.from_numpy(self._graphs.run(self._name, *(a.float() for a in args))[0]).to(x.device)


class OrtFlowEncoder(nn.Module):
    def __init__(self, cfg, graphs: OrtGraphs):
        super().__init__()
        self.cfg, self._graphs = cfg, graphs
        graphs.session("flow_encoder")

    def forward(self, xs, xs_lens=None, *, isolate_rows: bool = False):
        b, t, _ = xs.shape
        if xs_lens is None:
            xs_lens = torch.full((b,), t, dtype=torch.long)
        elif not isolate_rows and bool((xs_lens < t).any()):
            # The graph isolates padded rows; the official padded-batch leak is PyTorch-only.
            raise OnnxBackendError("the exported flow encoder runs padded rows isolated only (isolate_rows=True)")
        h, mask = self._graphs.run("flow_encoder", xs.float(), xs_lens.long())
        return torch.from_numpy(h).to(xs.device), torch.from_numpy(mask).to(xs.device)


def _attach_hift(hift: nn.Module, graphs: OrtGraphs) -> None:
    """Shadow HiFT's `f0` and `decode` with graph calls; its source (random) stays PyTorch."""
    for name in ("hift_f0", "hift_decode"):
        graphs.session(name)

    def f0(mel):
        hift._check_mel(mel)
        return torch.from_numpy(graphs.run("hift_f0", mel.float())[0])

    def decode(mel, s):
        hift._check_mel(mel)
        return torch.from_numpy(graphs.run("hift_decode", mel.float(), s.float())[0])

    hift.f0, hift.decode = f0, decode


def attach(t3: nn.Module, s3gen: nn.Module, onnx_dir: str | Path, *, providers: list[str] | None = None) -> OrtT3:
    """Swap `s3gen`'s flow estimator, encoder and HiFT for ONNX Runtime calls (in place) and return
    the T3 stand-in. CPU tensors only: the graphs read and write host memory."""
    graphs = OrtGraphs(onnx_dir, providers)
    if graphs.manifest["samples_per_frame"] != s3gen.mel2wav.cfg.samples_per_frame:
        raise OnnxBackendError(f"{graphs.dir}: exported for another HiFT than this checkpoint's")
    ort_t3 = OrtT3(t3, graphs)
    flow = s3gen.flow
    flow.decoder.estimator = OrtEstimator(flow.decoder.estimator.cfg, graphs)
    flow.encoder = OrtFlowEncoder(flow.encoder.cfg, graphs)
    _attach_hift(s3gen.mel2wav, graphs)
    return ort_t3

"""Command-line options shared by `speak`, `serve` and `bench`: which flow decoder and how it runs."""

from __future__ import annotations

__all__ = ["add_flow_arguments", "flow_from_args", "add_dtype_argument", "T3_DTYPES"]

_DTYPES = ["fp32", "bf16", "fp16"]
# int8/int4: weight-only quantized T3 linears (torchao, the `quant` extra; see nutq.models.quant).
T3_DTYPES = [*_DTYPES, "int8", "int4"]


def add_dtype_argument(p) -> None:
    p.add_argument("--dtype", choices=T3_DTYPES,
                   help="T3 weights: a float dtype, or int8/int4 weight-only quantization (default: bf16 on CUDA, "
                        "the file's fp32 on CPU)")


def add_flow_arguments(p, *, flow_dtype: bool = True) -> None:
    p.add_argument("--flow", choices=["cfm", "meanflow"], default="cfm",
                   help="S3Gen decoder: cfm, the official 10-step one (default), or meanflow, the distilled "
                        "2-step one (needs s3gen_meanflow.safetensors: `nutq download --flow meanflow`)")
    p.add_argument("--flow-steps", type=int, metavar="N",
                   help="solver steps (default: 10 for cfm, 2 for meanflow)")
    p.add_argument("--flow-cfg-rate", type=float, metavar="X",
                   help="classifier-free guidance of the cfm decoder (default 0.7; 0 halves its cost)")
    p.add_argument("--meanflow-revision",
                   help="Turbo repository revision of the meanflow file when downloading; also $NUTQ_MEANFLOW_REVISION")
    if flow_dtype:
        p.add_argument("--flow-dtype", choices=_DTYPES, help="S3Gen flow weights dtype (default: bf16 on CUDA, fp32 on CPU)")


def flow_from_args(args):
    """The FlowOptions the flags describe (a ValueError with the reason if they contradict)."""
    from .engine.flow_options import FlowOptions

    return FlowOptions(args.flow, args.flow_steps, args.flow_cfg_rate)

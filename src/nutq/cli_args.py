"""Command-line options shared by `speak`, `serve` and `bench`: which flow decoder and how it runs."""

from __future__ import annotations

__all__ = ["add_flow_arguments", "flow_from_args", "add_dtype_argument", "add_speculative_arguments",
           "speculative_from_args", "T3_DTYPES"]

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


def add_speculative_arguments(p) -> None:
    p.add_argument("--draft", metavar="DRAFT",
                   help="speculative T3 decoding with DRAFT: a draft.safetensors (`nutq train draft`), "
                        "shortcut:N (the target's first N layers, untrained) or target (tests); default off")
    p.add_argument("--spec-k", type=int, default=4, metavar="K", help="with --draft: drafts per round to start with "
                   "(each session adapts it to its acceptance)")
    p.add_argument("--spec-max-batch", type=int, default=1, metavar="N",
                   help="with --draft: decode speculatively while at most N streams step together, plain batched "
                        "steps above (see BENCHMARKS.md for the measured crossover)")
    p.add_argument("--spec-tolerance", type=float, default=0.0, metavar="BETA",
                   help="with --draft: accept a draft when r < min(1, p/q) + BETA (SSD). LOSSY: the audio no longer "
                        "follows the model's distribution exactly; 0 (default) is exact")


def speculative_from_args(args) -> dict:
    """The EngineConfig fields the speculative flags set."""
    return dict(draft=args.draft, spec_k=args.spec_k, spec_max_batch=args.spec_max_batch,
                spec_tolerance=args.spec_tolerance)

"""Concurrent streams: TTFA p50/p95/p99, RTF, underruns, tokens/s and memory against N.

The same as `nutq bench --concurrency ...`, with the defaults of the
recorded concurrency study (concurrency 1,4,16,32,64, both arrival patterns, one trial):

    python benchmarks/concurrency.py --model-dir DIR [--device cuda --dtype bf16] \
        [--concurrency 1,4,16,32,64] [--arrival both] [--sequential] [--tokens 100]

Writes benchmarks/results/concurrency_<device>.json and a PNG beside it unless --json/--plot say otherwise.
"""

import sys
from pathlib import Path

from nutq.cli import main


def _has(flag: str, argv: list[str]) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


if __name__ == "__main__":
    argv = sys.argv[1:]
    device = next((a.split("=", 1)[1] for a in argv if a.startswith("--device=")), None)
    if device is None and "--device" in argv:
        device = argv[argv.index("--device") + 1]
    stem = Path(__file__).parent / "results" / f"concurrency_{(device or 'cpu').split(':')[0]}"
    defaults = {"--concurrency": "1,4,16,32,64", "--arrival": "both", "--json": f"{stem}.json",
                "--plot": f"{stem}.png", "--trials": "1", "--warmup": "1"}
    extra = [x for k, v in defaults.items() if not _has(k, argv) for x in (k, v)]
    sys.exit(main(["bench", *argv, *extra]))

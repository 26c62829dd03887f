"""Streaming latency per stage (the same as `nutq bench`; see `python benchmarks/latency.py -h`)."""

import sys

from nutq.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

"""Drives the official package in its own environment for side-by-side runs.

The official chatterbox-tts pins other versions of torch and transformers than nutq, so it runs
in the reference env (tools/refenv/build.sh) as a long-lived worker process
(tools/bench/official_worker.py): loaded once, then one `generate()` per request, which lets the
benchmark interleave official and nutq trials.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..errors import NutqError

__all__ = ["OfficialWorker", "refenv_python"]

REPO = Path(__file__).resolve().parents[3]
WORKER = REPO / "tools" / "bench" / "official_worker.py"


def refenv_python() -> Path:
    root = Path(os.environ.get("NUTQ_REFENV", Path.home() / ".cache" / "nutq-refenv"))
    py = root / "venv" / "bin" / "python"
    if not py.exists():
        raise NutqError(f"--vs-reference needs the reference env at {root} (build it: make refenv)")
    if not WORKER.exists():
        raise NutqError(f"{WORKER} not found: --vs-reference runs from a nutq source checkout")
    return py


class OfficialWorker:
    def __init__(self, model_dir: Path, text: str, language: str, tokens: int, threads: int = 0):
        cmd = [str(refenv_python()), str(WORKER), "--model-dir", str(model_dir), "--text", text,
               "--language", language, "--tokens", str(tokens), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": true} once the model is loaded

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise NutqError(f"the official worker exited with code {code} (see its stderr above)")
        return json.loads(line)

    def run(self, seed: int) -> dict:
        self.proc.stdin.write(json.dumps({"seed": seed}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> "OfficialWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

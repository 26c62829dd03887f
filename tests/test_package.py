"""Package hygiene: a cheap import, a working console script."""

from __future__ import annotations

import subprocess
import sys


def run_py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_nutq_is_light():
    out = run_py("import sys, nutq, nutq.cli, nutq.errors; "
                 "print(sorted(m for m in ('torch', 'numpy', 'tokenizers', 'huggingface_hub', 'safetensors') if m in sys.modules))")
    assert out.strip() == "[]", f"heavy modules imported by `import nutq`: {out}"


def test_cli_help_and_version():
    out = subprocess.run([sys.executable, "-m", "nutq.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("make-checkpoint", "download"):
        assert cmd in out
    v = subprocess.run([sys.executable, "-m", "nutq.cli", "--version"], capture_output=True, text=True, check=True).stdout
    assert v.startswith("nutq ")


def test_cli_errors_are_one_line_not_tracebacks(tmp_path):
    p = subprocess.run([sys.executable, "-m", "nutq.cli", "download", "--model-dir", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.startswith("nutq: error: model directory does not exist") and "Traceback" not in p.stderr


def test_cli_help_does_not_import_torch():
    """`nutq --help`, `nutq serve --help` and `nutq speak --help` build every parser (the optional
    subcommands included) without torch: help stays instant and works without the model stack."""
    code = """
import contextlib, io, sys
from nutq.cli import main
shown = {}
for argv in ([], ["serve"], ["speak"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    shown[" ".join(argv)] = out.getvalue()
assert "serve" in shown[""] and "--max-sessions" in shown["serve"] and "--flow" in shown["speak"], shown
print(sorted(m for m in ("torch", "torchaudio", "transformers") if m in sys.modules))
"""
    assert run_py(code).strip() == "[]"

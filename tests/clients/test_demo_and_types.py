"""The demo route (`nutq.serve.demo`, `nutq serve --no-demo`) and the browser client's TypeScript
declarations: every export of the modules is declared, and a typed usage example compiles with
`tsc --strict` (when TypeScript is available: .ci/run installs it from npm and sets NUTQ_TSC)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from nutq.serve.demo import CLIENT_DIR, install_demo  # noqa: E402

JS = Path(__file__).resolve().parents[2] / "clients" / "js"


def test_demo_page_and_client_files_are_served():
    app = FastAPI()
    assert install_demo(app) and CLIENT_DIR == JS
    http = TestClient(app)
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<base href="/client/demo/">' in page.text and 'dir="rtl"' in page.text
    for path in ("/client/nutq.js", "/client/player.js", "/client/player-worklet.js", "/client/demo/demo.js"):
        r = http.get(path)
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], path  # module scripts need it
    # every relative import of the demo resolves to a served file
    for spec in re.findall(r'from "(\.[^"]+)"', http.get("/client/demo/demo.js").text):
        assert http.get("/client/demo/" + spec).status_code == 200, spec


def test_no_demo_without_the_files_and_the_flag(tmp_path):
    assert install_demo(FastAPI(), tmp_path) is False
    from nutq.serve.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert parser.parse_args(["serve", "--no-demo"]).no_demo and not parser.parse_args(["serve"]).no_demo


def _declared(dts: str) -> set[str]:
    return set(re.findall(r"^export declare (?:class|function|const) (\w+)", dts, re.M))


def test_every_export_is_declared():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: export list not checked")
    for module, dts in (("nutq.js", "nutq.d.ts"), ("player.js", "player.d.ts")):
        out = subprocess.run([node, "--input-type=module", "-e",
                              f"const m = await import({str(JS / module)!r}); console.log(Object.keys(m).join(' '))"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert set(out) == _declared((JS / dts).read_text()), module


def test_types_compile_with_strict_tsc():
    tsc = os.environ.get("NUTQ_TSC") or shutil.which("tsc")
    if not tsc:
        pytest.skip("TypeScript not found (set NUTQ_TSC, or npm install typescript): declarations not compiled")
    r = subprocess.run([tsc, "-p", str(JS / "types-check" / "tsconfig.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

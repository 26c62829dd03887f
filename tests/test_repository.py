"""The repository stands alone: the fixtures the tests need are in it, and no test, tool or doc
reads or links anything beside the checkout.

The full proof is `.ci/run`, which clones the repository into an empty temporary directory and runs
`make test` there; these checks catch a regression early, in the default suite.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURE_VOCAB, REPO, STATEDICTS, refenv_python

# Every listing of an official tensor set the structure tests use or document.
LISTINGS = (
    "conds.txt", "s3gen_campplus_speaker_encoder.txt", "s3gen_flow_decoder_estimator.txt",
    "s3gen_flow_encoder.txt", "s3gen_flow_misc.txt", "s3gen_full.txt", "s3gen_hift_mel2wav.txt",
    "s3gen_s3tokenizer.txt", "t3_mtl23ls_v2.txt", "turbo_s3gen_meanflow_extra_keys.txt",
    "turbo_t3_gpt2.txt", "ve.txt",
)
SCANNED = ("src", "tests", "tools", "docs", "benchmarks", ".ci", "Makefile", "pyproject.toml", "README.md",
           "PARITY.md", "BENCHMARKS.md")
# Spelled in pieces so that this file does not match itself.
OUTSIDE = [re.compile(p) for p in (r"\.\./" + "shared", r"REPO\.parent", r'"shared"\s*/', "CHATTERBOX" + r"\.md",
                                   "/work" + "/")]
PARENTS = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=REPO, capture_output=True, check=True).stdout
        paths = [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        paths = [p for s in SCANNED for p in ([REPO / s] if (REPO / s).is_file() else (REPO / s).rglob("*"))]
    return [p for p in paths if p.is_file() and p.suffix not in (".safetensors", ".png", ".wav")]


def test_no_file_reads_or_links_outside_the_repository():
    files = tracked_text_files()
    assert len(files) > 100, "the scan found almost nothing: is SCANNED right?"
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        rel = path.relative_to(REPO)
        for n, line in enumerate(text.splitlines(), 1):
            found += [f"{rel}:{n}: {line.strip()}" for p in OUTSIDE if p.search(line)]
            # parents[k] of a file k+1 or more folders deep is beside the repository, not in it.
            found += [f"{rel}:{n}: parents[{m.group(1)}] leaves the repository"
                      for m in PARENTS.finditer(line) if int(m.group(1)) > len(rel.parts) - 1]
    assert found == [], "references outside the repository:\n" + "\n".join(found)


def test_vocabulary_fixture_is_the_official_file():
    notice = (FIXTURE_VOCAB.parent / "NOTICE.md").read_text()
    digest = hashlib.sha256(FIXTURE_VOCAB.read_bytes()).hexdigest()
    assert digest in notice, "the bundled vocabulary is not the file its NOTICE names (token ids would differ)"
    assert "MIT" in notice and "Resemble AI" in notice


@pytest.mark.parametrize("name", LISTINGS)
def test_every_official_listing_is_vendored_and_well_formed(name):
    lines = (STATEDICTS / name).read_text().splitlines()
    assert lines, name
    row = re.compile(r"\S+ (None|\((\d+(,\d+)*)?\) (float32|int64))")
    bad = [line for line in lines if not row.fullmatch(line)]
    assert bad == [], f"{name}: lines not `key (shape) dtype` or `key None`: {bad[:3]}"
    keys = [line.split()[0] for line in lines]
    assert len(set(keys)) == len(keys), f"{name}: duplicate keys"


def test_no_other_listings_lie_unchecked():
    assert sorted(p.name for p in STATEDICTS.iterdir()) == sorted(LISTINGS)


def test_s3gen_part_listings_partition_the_full_listing():
    full = (STATEDICTS / "s3gen_full.txt").read_text().splitlines()
    parts = ("s3gen_s3tokenizer.txt", "s3gen_campplus_speaker_encoder.txt", "s3gen_flow_misc.txt",
             "s3gen_flow_encoder.txt", "s3gen_flow_decoder_estimator.txt", "s3gen_hift_mel2wav.txt")
    rows = [line for p in parts for line in (STATEDICTS / p).read_text().splitlines()]
    assert sorted(rows) == sorted(full)


@pytest.mark.refenv
@pytest.mark.slow
def test_regenerating_the_listings_gives_identical_files(tmp_path):
    """tools/parity/statedicts.py, run on the official package, writes exactly the vendored files."""
    py = refenv_python()
    if py is None:
        pytest.skip("reference env not built (bash tools/refenv/build.sh)")
    subprocess.run([py, str(REPO / "tools" / "parity" / "statedicts.py"), "--out", str(tmp_path)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(LISTINGS)
    changed = [n for n in LISTINGS if (tmp_path / n).read_bytes() != (STATEDICTS / n).read_bytes()]
    assert changed == [], f"regenerated listings differ from tests/fixtures/statedicts: {changed}"

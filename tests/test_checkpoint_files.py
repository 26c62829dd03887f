"""Checkpoint resolution: local directories, truncation checks, and the Hub download path.

The download tests run huggingface_hub for real and replace only its HTTP transport with an
in-process fake of the model repository, so URLs, revisions, caching and error mapping are
exercised up to the network boundary.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from nutq.checkpoints import files
from nutq.errors import CheckpointError


def fake_checkpoint(root, conds=True):
    root.mkdir(parents=True, exist_ok=True)
    save_file({"a": torch.zeros(4)}, str(root / files.T3_FILE))
    torch.save({"w": torch.zeros(2)}, root / files.S3GEN_FILE)
    torch.save({"w": torch.zeros(2)}, root / files.VE_FILE)
    (root / files.TOKENIZER_FILE).write_text(json.dumps({"model": {"vocab": {}}}))
    if conds:
        torch.save({"t3": {}, "gen": {}}, root / files.CONDS_FILE)
    return root


def test_local_dir_resolves(tmp_path):
    root = fake_checkpoint(tmp_path / "m")
    f = files.resolve(root)
    assert f.t3 == root / files.T3_FILE and f.conds == root / files.CONDS_FILE
    assert f.sidecar == {}


def test_env_var_is_used(tmp_path, monkeypatch):
    root = fake_checkpoint(tmp_path / "m")
    monkeypatch.setenv("NUTQ_MODEL_DIR", str(root))
    assert files.resolve().root == root


def test_missing_files_are_named(tmp_path):
    root = fake_checkpoint(tmp_path / "m")
    (root / files.VE_FILE).unlink()
    (root / files.S3GEN_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"lacks s3gen\.pt, ve\.pt"):
        files.resolve(root)


def test_missing_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        files.resolve(tmp_path / "nope")


def test_conds_is_optional(tmp_path):
    assert files.resolve(fake_checkpoint(tmp_path / "m", conds=False)).conds is None


@pytest.mark.parametrize("name", [files.T3_FILE, files.S3GEN_FILE, files.TOKENIZER_FILE])
def test_truncated_files_are_detected(tmp_path, name):
    root = fake_checkpoint(tmp_path / "m")
    p = root / name
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 7])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        files.resolve(root)


def test_safetensors_header_claiming_more_than_the_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CheckpointError, match="truncated"):
        files.check_file(p)


# ---- the Hub download path, network faked -----------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """An in-process stand-in for the model repository behind huggingface_hub's HTTP client."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    httpx = getattr(_http, "httpx2", None) or getattr(_http, "httpx")
    src = fake_checkpoint(tmp_path / "served")
    served = {p.name: p.read_bytes() for p in src.iterdir()}
    save_file({"mixer": torch.ones(3)}, str(tmp_path / files.MEANFLOW_FILE))
    # The Turbo repository holds more than nutq needs; only the meanflow file may be fetched.
    turbo = {files.MEANFLOW_FILE: (tmp_path / files.MEANFLOW_FILE).read_bytes(), "t3_turbo_v1.safetensors": b"x"}
    repos = {files.REPO_ID: served, files.MEANFLOW_REPO_ID: turbo}
    state = {"requests": [], "offline": False}

    def handler(request):
        state["requests"].append((request.method, str(request.url)))
        if state["offline"]:
            raise httpx.ConnectError("network unreachable", request=request)
        parts = request.url.path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return httpx.Response(404)
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo not in repos:
            return httpx.Response(401, headers={"X-Error-Code": "RepoNotFound"})
        if revision not in ("main", COMMIT) or name not in repos[repo]:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound" if revision in ("main", COMMIT) else "RevisionNotFound"})
        body = repos[repo][name]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                   "Content-Length": str(len(body))}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("NUTQ_MODEL_DIR", raising=False)
    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # the hub retries network errors with backoff
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(handler)))
    state["turbo"] = turbo
    yield state, served
    huggingface_hub.set_client_factory(_http.default_client_factory)


def test_download_fetches_only_the_multilingual_files(fake_hub):
    state, served = fake_hub
    f = files.resolve(revision=COMMIT)
    assert f.root.name == COMMIT
    for name in files.REQUIRED_FILES + (files.CONDS_FILE,):
        assert (f.root / name).read_bytes() == served[name]
    fetched = {u.rsplit("/", 1)[-1] for m, u in state["requests"] if m == "GET" and "/resolve/" in u}
    assert fetched == set(files.REQUIRED_FILES) | {files.CONDS_FILE}
    assert all(f"/resolve/{COMMIT}/" in u for m, u in state["requests"] if "/resolve/" in u)


def test_download_revision_from_env(fake_hub, monkeypatch):
    monkeypatch.setenv("NUTQ_MODEL_REVISION", COMMIT)
    state, _ = fake_hub
    files.resolve()
    assert any(f"/resolve/{COMMIT}/" in u for _, u in state["requests"])


def test_download_missing_remote_file_is_named(fake_hub):
    _, served = fake_hub
    del served[files.VE_FILE]
    with pytest.raises(CheckpointError, match=r"has no file ve\.pt"):
        files.resolve()


def test_download_without_conds_still_works(fake_hub):
    _, served = fake_hub
    del served[files.CONDS_FILE]
    assert files.resolve().conds is None


def test_offline_gives_a_clear_message(fake_hub):
    state, _ = fake_hub
    state["offline"] = True
    with pytest.raises(CheckpointError, match="--model-dir"):
        files.resolve()


def test_offline_after_a_download_uses_the_cache(fake_hub):
    state, _ = fake_hub
    first = files.resolve()
    state["offline"] = True
    assert files.resolve().root == first.root


def test_download_can_be_disabled(monkeypatch):
    monkeypatch.delenv("NUTQ_MODEL_DIR", raising=False)
    with pytest.raises(CheckpointError, match="downloading is disabled"):
        files.resolve(allow_download=False)


def test_download_meanflow_fetches_exactly_that_file_from_the_turbo_repo(fake_hub):
    state, served = fake_hub
    f = files.resolve(revision=COMMIT, flow="meanflow", meanflow_revision=COMMIT)
    assert f.meanflow.read_bytes() == state["turbo"][files.MEANFLOW_FILE]
    turbo_gets = [u for m, u in state["requests"] if m == "GET" and files.MEANFLOW_REPO_ID in u]
    assert [u.rsplit("/", 1)[-1] for u in turbo_gets] == [files.MEANFLOW_FILE]
    assert all(f"/resolve/{COMMIT}/" in u for m, u in state["requests"] if files.MEANFLOW_REPO_ID in u)
    assert (f.root / files.T3_FILE).read_bytes() == served[files.T3_FILE]


def test_meanflow_revision_from_env_and_missing_remote_file(fake_hub, monkeypatch):
    state, _ = fake_hub
    monkeypatch.setenv("NUTQ_MEANFLOW_REVISION", COMMIT)
    files.resolve(flow="meanflow")
    assert any(f"{files.MEANFLOW_REPO_ID}/resolve/{COMMIT}/" in u for _, u in state["requests"])
    del state["turbo"][files.MEANFLOW_FILE]
    monkeypatch.setenv("NUTQ_MEANFLOW_REVISION", "main")
    with pytest.raises(CheckpointError, match=r"chatterbox-turbo@main has no file s3gen_meanflow\.safetensors"):
        files.resolve(flow="meanflow")


def test_meanflow_offline_message(fake_hub):
    state, _ = fake_hub
    files.resolve()  # the multilingual files are cached, the meanflow file is not
    state["offline"] = True
    with pytest.raises(CheckpointError, match="s3gen_meanflow.safetensors.*offline"):
        files.resolve(flow="meanflow")


def test_a_local_meanflow_file_is_used_without_downloading(tmp_path, monkeypatch):
    root = fake_checkpoint(tmp_path / "m")
    save_file({"mixer": torch.ones(3)}, str(root / files.MEANFLOW_FILE))
    f = files.resolve(root, flow="meanflow")
    assert f.meanflow == root / files.MEANFLOW_FILE


def test_download_cli_prints_both_locations(fake_hub, capsys):
    from nutq.cli import main

    assert main(["download", "--flow", "meanflow"]) == 0
    out = capsys.readouterr().out.split()
    assert out[1].endswith(files.MEANFLOW_FILE) and files.MEANFLOW_FILE not in out[0]

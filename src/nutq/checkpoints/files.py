"""Where the official multilingual checkpoint files come from, and whether they are intact.

Resolution order: an explicit directory (`--model-dir`), then `$NUTQ_MODEL_DIR`, then a download of
exactly the files nutq needs from the `ResembleAI/chatterbox` model repository (revision pinnable
with `--revision` / `$NUTQ_MODEL_REVISION`). Every file is checked for truncation before use, so a
half-finished copy fails here with its name rather than deep inside torch.

The distilled flow decoder (`s3gen_meanflow.safetensors`) is one more file, from another model
repository (`ResembleAI/chatterbox-turbo`): it is needed only with `flow="meanflow"`, may sit in the
model directory beside the multilingual files, and is downloaded on its own with its own revision
pin (`--meanflow-revision` / `$NUTQ_MEANFLOW_REVISION`).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

__all__ = [
    "REPO_ID", "T3_FILE", "S3GEN_FILE", "VE_FILE", "TOKENIZER_FILE", "CONDS_FILE", "SIDECAR_FILE",
    "REQUIRED_FILES", "MEANFLOW_FILE", "MEANFLOW_REPO_ID", "CheckpointError", "CheckpointFiles", "resolve",
    "check_file", "download_meanflow",
]

REPO_ID = "ResembleAI/chatterbox"
T3_FILE = "t3_mtl23ls_v2.safetensors"
S3GEN_FILE = "s3gen.pt"
VE_FILE = "ve.pt"
TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
CONDS_FILE = "conds.pt"  # the built-in default voice; optional
SIDECAR_FILE = "nutq.json"  # nutq's own: model sizes of a non-official (e.g. tiny) checkpoint
REQUIRED_FILES = (T3_FILE, S3GEN_FILE, VE_FILE, TOKENIZER_FILE)
ENV_DIR = "NUTQ_MODEL_DIR"
ENV_REVISION = "NUTQ_MODEL_REVISION"
MEANFLOW_REPO_ID = "ResembleAI/chatterbox-turbo"
MEANFLOW_FILE = "s3gen_meanflow.safetensors"  # the whole S3Gen, distilled to a 2-step decoder
ENV_MEANFLOW_REVISION = "NUTQ_MEANFLOW_REVISION"
MEANFLOW_HINT = "`nutq download --flow meanflow` fetches it"


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    meanflow_file: Path | None = None  # where the meanflow decoder was found or downloaded, if anywhere

    @property
    def t3(self) -> Path:
        return self.root / T3_FILE

    @property
    def s3gen(self) -> Path:
        return self.root / S3GEN_FILE

    @property
    def ve(self) -> Path:
        return self.root / VE_FILE

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER_FILE

    @property
    def meanflow(self) -> Path:
        """The checked meanflow decoder file; CheckpointError naming it (and how to get it) if absent."""
        p = self.meanflow_file or self.root / MEANFLOW_FILE
        if not p.is_file():
            raise _no_meanflow(self.root)
        check_file(p)
        return p

    @property
    def conds(self) -> Path | None:
        p = self.root / CONDS_FILE
        return p if p.exists() else None

    @property
    def sidecar(self) -> dict:
        """Model configs of a nutq-made checkpoint; {} for the official files (official sizes)."""
        p = self.root / SIDECAR_FILE
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{p}: unreadable sidecar config ({e})") from e


def _no_meanflow(root: Path) -> CheckpointError:
    return CheckpointError(f"the meanflow decoder needs {MEANFLOW_FILE}, which {root} lacks; {MEANFLOW_HINT}"
                           " (into the Hub cache), or copy it into the model directory")


def check_file(path: Path) -> None:
    """Raise CheckpointError if `path` is missing, empty or visibly truncated for its format."""
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"empty checkpoint file: {path}")
    try:
        if path.suffix == ".safetensors":
            _check_safetensors(path, size)
        elif path.suffix == ".pt":
            # torch.save writes a zip; its central directory sits at the very end, so a
            # truncated download cannot be opened.
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise CheckpointError(f"corrupt or truncated checkpoint file: {path} ({type(e).__name__}: {e})") from e


def _check_safetensors(path: Path, size: int) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"truncated safetensors file (no header): {path}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"truncated safetensors file (header of {n} bytes, file {size}): {path}")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"truncated safetensors file: {path} has {size} bytes, tensors need {8 + n + end}")


def _check_dir(root: Path) -> CheckpointFiles:
    if not root.is_dir():
        raise CheckpointError(f"model directory does not exist: {root}")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise CheckpointError(
            f"model directory {root} lacks {', '.join(missing)}; it needs {', '.join(REQUIRED_FILES)}"
            f" (and optionally {CONDS_FILE}). Make a random one with `nutq make-checkpoint DIR`."
        )
    for f in REQUIRED_FILES + ((CONDS_FILE,) if (root / CONDS_FILE).exists() else ()):
        check_file(root / f)
    return CheckpointFiles(root)


def download(repo_id: str = REPO_ID, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fetch only the multilingual files from the Hub; returns the snapshot directory."""
    root: Path | None = None
    for name in REQUIRED_FILES + (CONDS_FILE,):
        p = _hub_fetch(repo_id, name, revision, cache_dir)
        if p is None:
            if name == CONDS_FILE:
                continue
            raise CheckpointError(f"{repo_id}@{revision or 'main'} has no file {name}")
        root = p.parent
    assert root is not None
    return root


def _hub_fetch(repo_id: str, name: str, revision: str | None, cache_dir) -> Path | None:
    """One file from the Hub; None if the repository has no such file (the caller decides)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - declared dependency
        raise CheckpointError("huggingface_hub is required to download the model") from e
    try:
        return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir))
    # LocalEntryNotFoundError subclasses EntryNotFoundError: it must be caught first.
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"cannot download {name} from {repo_id}: offline or the Hub is unreachable, and it is not in"
            f" the local cache. Pass --model-dir DIR (or set {ENV_DIR}) to use files you already have."
        ) from e
    except EntryNotFoundError:
        return None
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"model repository {repo_id} (revision {revision or 'main'}) not found: {e}") from None
    except OSError as e:
        raise CheckpointError(f"downloading {name} from {repo_id} failed: {e}") from e


def download_meanflow(revision: str | None = None, cache_dir: str | Path | None = None,
                      repo_id: str = MEANFLOW_REPO_ID) -> Path:
    """Fetch exactly the meanflow decoder file (nothing else of the Turbo repository); its path."""
    p = _hub_fetch(repo_id, MEANFLOW_FILE, revision, cache_dir)
    if p is None:
        raise CheckpointError(f"{repo_id}@{revision or 'main'} has no file {MEANFLOW_FILE}")
    check_file(p)
    return p


def resolve(model_dir: str | Path | None = None, *, revision: str | None = None, allow_download: bool = True,
            repo_id: str = REPO_ID, flow: str = "cfm", meanflow_revision: str | None = None) -> CheckpointFiles:
    """A checked CheckpointFiles from a directory, $NUTQ_MODEL_DIR, or the Hub.

    `flow="meanflow"` also requires the meanflow decoder: in the model directory if it holds one,
    else (downloads allowed) fetched from the Turbo repository at `meanflow_revision`
    (or $NUTQ_MEANFLOW_REVISION)."""
    if flow not in ("cfm", "meanflow"):
        raise ValueError(f"flow must be 'cfm' or 'meanflow', got {flow!r}")
    model_dir = model_dir or os.environ.get(ENV_DIR)
    if model_dir:
        files = _check_dir(Path(model_dir).expanduser())
    elif not allow_download:
        raise CheckpointError(f"no model directory given (--model-dir or ${ENV_DIR}) and downloading is disabled")
    else:
        files = _check_dir(download(repo_id, revision or os.environ.get(ENV_REVISION)))
    if flow == "meanflow":
        local = files.root / MEANFLOW_FILE
        if local.is_file():
            check_file(local)
            return CheckpointFiles(files.root, local)
        if not allow_download or model_dir:
            raise _no_meanflow(files.root)
        return CheckpointFiles(files.root, download_meanflow(meanflow_revision or os.environ.get(ENV_MEANFLOW_REVISION)))
    return files

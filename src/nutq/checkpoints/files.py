"""Where the official multilingual checkpoint files come from, and whether they are intact.

Resolution order: an explicit directory (`--model-dir`), then `$NUTQ_MODEL_DIR`, then a download of
exactly the files nutq needs from the `ResembleAI/chatterbox` model repository (revision pinnable
with `--revision` / `$NUTQ_MODEL_REVISION`). Every file is checked for truncation before use, so a
half-finished copy fails here with its name rather than deep inside torch.
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
    "REQUIRED_FILES", "CheckpointError", "CheckpointFiles", "resolve", "check_file",
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


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path

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
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - declared dependency
        raise CheckpointError("huggingface_hub is required to download the model") from e

    root: Path | None = None
    for name in REQUIRED_FILES + (CONDS_FILE,):
        try:
            p = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir))
        # LocalEntryNotFoundError subclasses EntryNotFoundError: it must be caught first.
        except LocalEntryNotFoundError as e:
            raise CheckpointError(
                f"cannot download {name} from {repo_id}: offline or the Hub is unreachable, and it is not in"
                f" the local cache. Pass --model-dir DIR (or set {ENV_DIR}) to use files you already have."
            ) from e
        except EntryNotFoundError:
            if name == CONDS_FILE:
                continue
            raise CheckpointError(f"{repo_id}@{revision or 'main'} has no file {name}") from None
        except RepositoryNotFoundError as e:
            raise CheckpointError(f"model repository {repo_id} (revision {revision or 'main'}) not found: {e}") from None
        except OSError as e:
            raise CheckpointError(f"downloading {name} from {repo_id} failed: {e}") from e
        root = p.parent
    assert root is not None
    return root


def resolve(model_dir: str | Path | None = None, *, revision: str | None = None, allow_download: bool = True,
            repo_id: str = REPO_ID) -> CheckpointFiles:
    """A checked CheckpointFiles from a directory, $NUTQ_MODEL_DIR, or the Hub."""
    model_dir = model_dir or os.environ.get(ENV_DIR)
    if model_dir:
        return _check_dir(Path(model_dir).expanduser())
    if not allow_download:
        raise CheckpointError(f"no model directory given (--model-dir or ${ENV_DIR}) and downloading is disabled")
    return _check_dir(download(repo_id, revision or os.environ.get(ENV_REVISION)))

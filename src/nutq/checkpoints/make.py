"""`nutq make-checkpoint`: random weights in the official multilingual file layout.

Tests and benchmarks run on these: `tiny` (small widths, a `nutq.json` sidecar records the sizes)
and `full` (official sizes, no sidecar, byte-for-byte the official tensor set). Weights come from
`nutq.models.random_init`, so a checkpoint is reproducible from its seed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import torch

from ..models.random_init import randomize_module
from . import files

__all__ = ["make_checkpoint", "SIZES"]

SIZES = ("tiny", "full")
# Fixed DSP constants the official s3gen.pt stores as buffers: keep their real values.
DSP_BUFFERS = ("_mel_filters", "window")


def _bundled_tokenizer() -> Path:
    return Path(str(resources.files("nutq") / "assets" / files.TOKENIZER_FILE))


def _random_conds(cfgs: dict, seed: int) -> dict:
    """A random built-in voice in the official `conds.pt` format (shapes as tests/fixtures/statedicts/conds.txt)."""
    g = torch.Generator().manual_seed(seed + 7)
    t3 = cfgs["t3"]
    spk = torch.randn(1, t3.speaker_dim, generator=g)
    prompt_tokens_gen = 250  # 10 s of S3Gen prompt at 25 tokens/s
    xvec = torch.randn(1, 192, generator=g)
    return {
        "t3": {
            "speaker_emb": spk / spk.norm(),
            "clap_emb": None,
            "cond_prompt_speech_tokens": torch.randint(0, t3.start_speech, (1, t3.prompt_len), generator=g),
            "cond_prompt_speech_emb": None,
            "emotion_adv": torch.full((1, 1, 1), 0.5),
        },
        "gen": {
            "prompt_token": torch.randint(0, t3.start_speech, (1, prompt_tokens_gen), generator=g),
            "prompt_token_len": torch.tensor([prompt_tokens_gen]),
            # log-mel magnitudes of speech sit roughly in [-11, 2]
            "prompt_feat": -5.0 + 2.0 * torch.randn(1, 2 * prompt_tokens_gen, 80, generator=g),
            "prompt_feat_len": None,
            "embedding": xvec,
        },
    }


def make_checkpoint(out_dir: str | Path, size: str = "tiny", seed: int = 0, overwrite: bool = False,
                    meanflow: bool = False) -> files.CheckpointFiles:
    """`meanflow`: also write a random distilled decoder (`s3gen_meanflow.safetensors`, safetensors as
    the official file), with weights of its own (not those of s3gen.pt plus a mixer)."""
    from safetensors.torch import save_file

    from ..models.registry import build, build_meanflow, configs_for_size

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    out = Path(out_dir)
    existing = [f for f in files.REQUIRED_FILES + (files.CONDS_FILE, files.MEANFLOW_FILE) if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass overwrite=True (--force)")
    out.mkdir(parents=True, exist_ok=True)
    cfgs = configs_for_size(size)
    torch.manual_seed(seed)

    t3 = randomize_module(build("t3", cfgs["t3"]), seed)
    save_file({k: v.contiguous() for k, v in t3.state_dict().items()}, str(out / files.T3_FILE))
    del t3
    ve = randomize_module(build("ve", cfgs["ve"]), seed + 1)
    torch.save(ve.state_dict(), out / files.VE_FILE)
    del ve
    s3 = randomize_module(build("s3gen", cfgs["s3gen"]), seed + 2, keep_suffixes=DSP_BUFFERS)
    torch.save(s3.state_dict(), out / files.S3GEN_FILE)
    del s3
    if meanflow:
        mf = randomize_module(build_meanflow(cfgs["s3gen"]), seed + 3, keep_suffixes=DSP_BUFFERS)
        save_file({k: v.contiguous() for k, v in mf.state_dict().items()}, str(out / files.MEANFLOW_FILE))
        del mf
    else:
        (out / files.MEANFLOW_FILE).unlink(missing_ok=True)  # overwrite: no stale decoder of other weights
    shutil.copyfile(_bundled_tokenizer(), out / files.TOKENIZER_FILE)
    torch.save(_random_conds(cfgs, seed), out / files.CONDS_FILE)
    sidecar = out / files.SIDECAR_FILE
    if size == "full":
        sidecar.unlink(missing_ok=True)  # official layout: no sidecar means official sizes
    else:
        sidecar.write_text(json.dumps({"format": 1, "size": size, "seed": seed,
                                       **{k: asdict(v) for k, v in cfgs.items()}}, indent=1))
    return files.resolve(out, flow="meanflow" if meanflow else "cfm")

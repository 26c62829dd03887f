"""`nutq data prepare`: a validated manifest -> the prepared dataset trainers read (see `prepared`).

Per utterance, with the checkpoint's own models:
- the text as inference reads it (`text.TextReader`: frontend, final punctuation, MTL ids);
- S3 speech tokens of the whole utterance (16 kHz, the batched S3 tokenizer, `batch_size` at once);
- the voice inference would build from this clip (`engine.voice.prepare_voice`, unchanged): its
  voice-encoder embedding is the example's own `ve_embedding`, and its T3 prompt tokens and S3Gen
  prompt (tokens, mel, x-vector) serve the examples that take this clip as their reference.
Files that validation rejects are skipped with their reason (`prepared.json` `skipped`).

Work is cut into shards (see `plan`); each shard is computed from its own clips and written
atomically, so an interrupted run resumes by computing only the missing shards, and `workers`
processes compute different shards at once. The result depends only on the manifest, the
checkpoint and the settings (also with several workers): two runs write identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from .errors import DataError
from .manifest import read_manifest
from .prepared import FORMAT, INDEX_FILE, VERSION, PreparedExample, checkpoint_fingerprint, read_shard_meta, write_index, write_shard
from .validate import Thresholds, check_files

__all__ = ["PrepareSettings", "prepare"]

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class PrepareSettings:
    val_fraction: float = 0.1  # share of each dialect's audio held out (whole speakers)
    seed: int = 0
    shard_size: int = 256  # utterances per shard, about
    batch_size: int = 16  # utterances per S3 tokenizer call
    device: str = "cpu"
    thresholds: Thresholds = field(default_factory=Thresholds)

    def identity(self) -> dict:
        """What the output depends on (workers and threads do not change it)."""
        d = asdict(self)
        d["thresholds"] = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in d["thresholds"].items()}
        d["device"] = self.device.split(":")[0]  # any GPU of one kind gives the same numbers
        return d


class _Models:
    """The checkpoint parts prepare runs: voice encoder, S3Gen (tokenizer, mel, CAMPPlus), text reader."""

    def __init__(self, model_dir: str, device: str):
        import torch

        from ...checkpoints import files as ckfiles
        from ...models.registry import configs_from_sidecar, load_component
        from .text import TextReader

        files = ckfiles.resolve(model_dir)
        cfgs = configs_from_sidecar(files.sidecar)
        self.device = torch.device(device)
        self.ve = load_component(files.root, "ve", cfgs["ve"], device=self.device)
        self.s3gen = load_component(files.root, "s3gen", cfgs["s3gen"], device=self.device)
        self.prompt_len = cfgs["t3"].prompt_len
        self.reader = TextReader(files.tokenizer)


_WORKER: dict = {}


def _init_worker(model_dir: str, device: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["models"] = _Models(model_dir, device)


def _compute_shard(job: dict) -> int:
    """Compute and write one shard; returns its number of examples."""
    import numpy as np
    import torch

    from ...audio.resample import resample
    from ...engine.voice import prepare_voice
    from ...models.s3gen.model import S3_SR, S3GEN_SR
    from .audio_checks import decode

    m: _Models = _WORKER["models"]
    items, utts = job["items"], job["utterances"]
    need = sorted({it["index"] for it in items} | {it["ref_index"] for it in items})
    wav16, voices = {}, {}
    with torch.inference_mode():
        for i in need:
            dec = decode(utts[str(i)]["audio"])
            voices[i] = prepare_voice((m.ve, m.s3gen, m.prompt_len), dec.wav, dec.sr)
            w24 = resample(dec.wav, dec.sr, S3GEN_SR) if dec.sr != S3GEN_SR else dec.wav
            wav16[i] = torch.from_numpy(np.ascontiguousarray(resample(w24, S3GEN_SR, S3_SR)))
        tokens = {}
        for b in range(0, len(need), job["batch_size"]):
            batch = need[b:b + job["batch_size"]]
            toks, lens = m.s3gen.tokenizer.tokenize([wav16[i].to(m.device) for i in batch])
            for k, i in enumerate(batch):
                tokens[i] = toks[k, : int(lens[k])].cpu()
    examples = []
    for it in items:
        u, voice, ref = utts[str(it["index"])], voices[it["index"]], voices[it["ref_index"]]
        read = m.reader(u["text"], u["language"])
        examples.append(PreparedExample(
            id=u["id"], speaker=u["speaker"], dialect=u["dialect"], gender=u["gender"], language=u["language"],
            text=read.text, text_tokens=torch.tensor(read.ids, dtype=torch.int64),
            speech_tokens=tokens[it["index"]].to(torch.int64), ve_embedding=voice.speaker_emb.reshape(-1).float().cpu(),
            ref_id=it["ref_id"], prompt_speech_tokens=ref.prompt_tokens.reshape(-1).to(torch.int64).cpu(),
            flow_prompt_tokens=ref.gen.prompt_token.reshape(-1).to(torch.int64).cpu(),
            flow_prompt_mel=ref.gen.prompt_feat[0].float().cpu(), xvector=ref.gen.embedding.reshape(-1).float().cpu()))
    write_shard(job["path"], examples)
    return len(examples)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _make_plan(manifest: Path, model_dir: str, settings: PrepareSettings, workers: int, progress: bool) -> dict:
    from .plan import plan_shards, plan_splits
    from .text import TextReader
    from ...checkpoints import files as ckfiles

    utterances, problems = read_manifest(manifest)
    reader = TextReader(ckfiles.resolve(model_dir).tokenizer)
    results = check_files(utterances, settings.thresholds, reader, workers=workers, progress=progress)
    skipped = [{"line": p.line, "audio": p.audio, "reasons": [f"manifest: {p.reason}"]} for p in problems]
    usable = []
    for u, r in zip(utterances, results):
        errs = r.errors(settings.thresholds)
        if errs:
            skipped.append({"id": u.id, "audio": str(u.audio), "reasons": [f"{c}: {d}" for c, d in errs]})
        else:
            usable.append({"id": u.id, "audio": str(u.audio), "text": u.text, "speaker": u.speaker,
                           "dialect": u.dialect, "gender": u.gender, "language": u.language, "split": u.split,
                           "seconds": r.seconds})
    if not usable:
        raise DataError(f"no usable utterance in {manifest} (run `nutq data validate` to see why)")
    speaker_split, warnings = plan_splits(usable, settings.val_fraction, settings.seed)
    shards = plan_shards(usable, speaker_split, settings.shard_size, settings.seed)
    return {"usable": usable, "skipped": skipped, "warnings": warnings, "speaker_split": speaker_split,
            "shards": {s: [[asdict(it) for it in shard] for shard in v] for s, v in shards.items()}}


def prepare(manifest: str | Path, model_dir: str | Path, out: str | Path, settings: PrepareSettings = PrepareSettings(),
            *, workers: int = 1, threads: int = 1, force: bool = False, progress: bool = True) -> dict:
    """Write (or finish) the prepared dataset at `out`; returns prepared.json's content plus
    `computed` (shards computed by this call)."""
    from tqdm import tqdm

    manifest, out = Path(manifest), Path(out)
    if settings.thresholds.min_seconds < 1.0:
        raise DataError("prepare needs clips of at least 1 s (a shorter reference makes no stable voice)")
    key = {"manifest_sha256": _sha256(manifest) if manifest.is_file() else None,
           "checkpoint": checkpoint_fingerprint(model_dir), "settings": settings.identity()}
    if key["manifest_sha256"] is None:
        raise DataError(f"manifest not found: {manifest}")
    key = json.loads(json.dumps(key))  # as plan.json holds it (tuples become lists)
    plan_path = out / PLAN_FILE
    plan = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
    if plan is not None and plan["key"] != key:
        if not force:
            raise DataError(f"{out} holds data prepared from another manifest, checkpoint or settings; "
                            "choose another --out or pass --force to replace it")
        shutil.rmtree(out)
        plan = None
    elif plan is None and out.exists() and any(out.iterdir()):
        if not force:
            raise DataError(f"{out} is not empty and holds no prepare plan; choose another --out or pass --force")
        shutil.rmtree(out)
    if plan is None:
        out.mkdir(parents=True, exist_ok=True)
        plan = {"key": key, **_make_plan(manifest, str(model_dir), settings, workers, progress)}
        plan_path.write_text(json.dumps(plan, ensure_ascii=False), encoding="utf-8")
    usable = plan["usable"]
    jobs, done = [], 0
    for split, shards in plan["shards"].items():
        for n, items in enumerate(shards):
            path = out / split / f"shard-{n:05d}.safetensors"
            if path.is_file():
                try:
                    if len(read_shard_meta(path)) == len(items):
                        done += len(items)
                        continue
                except DataError:
                    pass  # a damaged shard is computed again
            needed = {it["index"] for it in items} | {it["ref_index"] for it in items}
            jobs.append({"path": str(path), "items": items, "batch_size": settings.batch_size,
                         "utterances": {str(i): usable[i] for i in needed}})
    total = sum(len(it) for shards in plan["shards"].values() for it in shards)
    meta = _index(plan, key)
    if jobs:  # a reader must not take a half-written dataset for a finished one
        write_index(out, {**meta, "complete": False})
    with tqdm(total=total, initial=done, desc="prepare", unit="utt", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            ctx = get_context("spawn")  # CUDA and OpenMP both dislike forked children
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(model_dir), settings.device, threads)) as pool:
                for n in pool.map(_compute_shard, jobs):
                    bar.update(n)
        elif jobs:
            _init_worker(str(model_dir), settings.device, threads)
            for job in jobs:
                bar.update(_compute_shard(job))
    write_index(out, meta)
    return {**meta, "computed": len(jobs)}


def _index(plan: dict, key: dict) -> dict:
    usable = plan["usable"]
    splits = {}
    for split, shards in plan["shards"].items():
        idx = [it["index"] for shard in shards for it in shard]
        splits[split] = {"shards": [{"name": f"shard-{n:05d}.safetensors", "count": len(s)} for n, s in enumerate(shards)],
                         "count": len(idx), "speakers": sorted({usable[i]["speaker"] for i in idx}),
                         "seconds": round(sum(usable[i]["seconds"] for i in idx), 3)}
    return {"format": FORMAT, "version": VERSION, "complete": True, "checkpoint": key["checkpoint"],
            "manifest_sha256": key["manifest_sha256"], "settings": key["settings"], "splits": splits,
            "skipped": plan["skipped"], "warnings": plan["warnings"]}

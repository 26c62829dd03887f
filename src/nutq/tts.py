"""`nutq.TTS`: offline synthesis on the plain reference path, and streaming synthesis (`stream`,
`astream`) on sessions over a pooled KV cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .audio.watermark import watermarker_for
from .checkpoints import files as ckfiles
from .engine.alignment import GuardConfig
from .engine.chunking import ChunkSchedule
from .engine.flow_options import FlowOptions, parse_flow
from .engine.generate import generate_speech_tokens
from .engine.kv_pool import KVPool
from .engine.sampling import SamplingParams
from .engine.scheduler import Scheduler
from .engine.session import Session, resolve_guard
from .engine.stream import AsyncSpeechStream, Phrase, SpeechStream
from .engine.voice import Voice, VoiceError, load_conds, prepare_voice
from .models.loading import DTYPES
from .models.registry import configs_from_sidecar, load_component, load_meanflow
from .text.fit import TextTooLong, split_to_fit

if TYPE_CHECKING:
    from .engine.voice_cache import VoiceCache

__all__ = ["TTS", "SAMPLE_RATE"]

SAMPLE_RATE = 24_000
_ENDINGS = tuple(".!?-,؟،؛。？！")


class TTS:
    """Loads the four official files once; `synthesize` is thread-compatible but not re-entrant."""

    def __init__(self, files: ckfiles.CheckpointFiles, device: str = "cpu", dtype: str | None = None, *,
                 flow_dtype: str | None = None, max_sessions: int = 1, max_cache_len: int = 1500,
                 voice_store: str | Path | None = None, scheduler: bool = False,
                 flow: FlowOptions | str | None = None):
        """`max_sessions` concurrent streams share a KV pool of `max_cache_len` positions per
        session (conditioning + text + speech tokens); it is allocated on the first stream.
        `scheduler`: streams are decoded together by one `Scheduler` (started on the first stream
        or by `start_scheduler()`, stopped by `close()`) instead of each in its consumer's thread.
        `voice_store`: a directory where the voice cache persists voices across restarts.
        `dtype` casts T3 and `flow_dtype` S3Gen's flow (the heaviest part of vocoding) to fp32,
        bf16 or fp16; the voice encoder, S3 tokenizer, CAMPPlus and HiFT stay in fp32.
        `flow`: which S3Gen decoder vocodes, a `FlowOptions` or a kind name ("cfm", the official
        10-step decoder, by default; "meanflow", the distilled 2-step one, which needs
        `s3gen_meanflow.safetensors`). With meanflow its S3Gen does everything after T3, voice
        preparation included; s3gen.pt is not loaded."""
        from .text.tokenizer import MTLTokenizer

        self.files = files
        self.device = torch.device(device)
        self.flow = parse_flow(flow)
        # A missing meanflow file fails here, before any loading.
        self._meanflow_file = meanflow_file = files.meanflow if self.flow.meanflow else None
        cfgs = configs_from_sidecar(files.sidecar)
        t3_dtype = DTYPES[dtype] if dtype else None
        self.t3 = load_component(files.root, "t3", cfgs["t3"], dtype=t3_dtype, device=self.device)
        self.ve = load_component(files.root, "ve", cfgs["ve"], device=self.device)
        if meanflow_file is not None:
            self.s3gen = load_meanflow(meanflow_file, cfgs["s3gen"], device=self.device)
        else:
            self.s3gen = load_component(files.root, "s3gen", cfgs["s3gen"], device=self.device)
        self._solver = self.flow.solver()
        if flow_dtype:
            self.s3gen.flow.to(DTYPES[flow_dtype])
        self.tokenizer = MTLTokenizer.from_file(files.tokenizer)
        self.default_voice: Voice | None = load_conds(files.conds) if files.conds else None
        self._pool_shape = (max_sessions, max_cache_len)
        self._pool: KVPool | None = None
        self._lazy_lock = threading.Lock()
        self._voice_store = voice_store
        self._voices = None
        self._text_frontend = None
        self._model_id: str | None = None
        self._use_scheduler = scheduler
        self._scheduler: Scheduler | None = None

    @classmethod
    def from_local(cls, model_dir: str | Path, *, flow: FlowOptions | str | None = None, **kw) -> "TTS":
        flow = parse_flow(flow)
        return cls(ckfiles.resolve(model_dir, flow=flow.kind), flow=flow, **kw)

    @classmethod
    def from_pretrained(cls, revision: str | None = None, *, flow: FlowOptions | str | None = None,
                        meanflow_revision: str | None = None, **kw) -> "TTS":
        """Download (or reuse from the Hub cache) the multilingual files, and with `flow="meanflow"`
        the distilled decoder from the Turbo repository (`meanflow_revision` pins it)."""
        flow = parse_flow(flow)
        files = ckfiles.resolve(None, revision=revision, flow=flow.kind, meanflow_revision=meanflow_revision)
        return cls(files, flow=flow, **kw)

    def prepare_voice(self, src, sr: int | None = None, exaggeration: float = 0.5) -> Voice:
        """A voice from a reference clip (path, bytes, or array with `sr`), or from a nutq voice
        file (`.safetensors`, see `nutq.engine.voice_format`)."""
        if isinstance(src, (str, Path)) and str(src).endswith(".safetensors"):
            from .engine.voice_format import load_voice

            return load_voice(src, model=self.model_id).with_exaggeration(exaggeration)
        with torch.inference_mode():
            return prepare_voice((self.ve, self.s3gen, self.t3.cfg.prompt_len), src, sr, exaggeration)

    @property
    def model_id(self) -> str:
        """Identity of the weights voices depend on (voice files record it; cheap, computed once)."""
        if self._model_id is None:
            from .engine.voice_format import model_fingerprint

            self._model_id = model_fingerprint(self.files.root, self._meanflow_file)
        return self._model_id

    @property
    def voices(self) -> "VoiceCache":
        """The voice cache: voices by id or clip content, LRU in memory, persisted under
        `voice_store` when one was given; "default" is the checkpoint's built-in voice."""
        with self._lazy_lock:
            if self._voices is None:
                from .engine.voice_cache import VoiceCache

                self._voices = VoiceCache(self.prepare_voice, store_dir=self._voice_store,
                                          default=self.default_voice, model=self.model_id)
            return self._voices

    def _spoken(self, text: str, language: str, normalize: bool, diacritize: bool = False) -> str:
        """The text as T3 will read it (whitespace collapsed, Arabic normalized and, when asked,
        diacritized); "" if nothing."""
        text = " ".join(text.split())
        if diacritize and language != "ar":
            raise ValueError(f"diacritization is for Arabic text, not language {language!r}")
        if (normalize or diacritize) and language == "ar":
            text = self._frontend()(text, "ar", diacritize=diacritize).text
        return text if text.strip() else ""

    def _frontend(self):
        """One Arabic frontend per TTS: it keeps the diacritization model once loaded."""
        with self._lazy_lock:
            if self._text_frontend is None:
                from .text.frontend import TextFrontend

                self._text_frontend = TextFrontend()
            return self._text_frontend

    def text_ids(self, text: str, language: str = "ar", normalize: bool = True,
                 diacritize: bool = False) -> torch.Tensor:
        """[SOT] + tokenizer ids + [EOT] for one utterance; TextTooLong (a ValueError) when they
        are more than T3's text positions (`stream` cuts such text into phrases instead)."""
        text = self._spoken(text, language, normalize, diacritize)
        if not text:
            raise ValueError("nothing to say: the text is empty after normalization")
        ids = self._ids(text, language)
        limit = self.t3.cfg.max_text_tokens + 2
        if len(ids) > limit:
            raise TextTooLong(f"the text is {len(ids)} text tokens after normalization; the model reads at most "
                              f"{limit} in one utterance (stream() splits longer text)")
        return ids

    def _ids(self, text: str, language: str) -> torch.Tensor:
        if not text.endswith(_ENDINGS):
            text += "."  # the official pipeline ends every utterance with punctuation
        ids = self.tokenizer.encode(text, language)
        cfg = self.t3.cfg
        return torch.tensor([cfg.start_text, *ids, cfg.stop_text], dtype=torch.long)

    @property
    def phrase_token_limit(self) -> int:
        """Most text ids (SOT/EOT included) of one streamed phrase: T3's text positions, and no
        more than a third of a KV slot after the conditioning, so that two thirds stay for its
        speech (about two speech tokens per text token)."""
        cfg = self.t3.cfg
        return min(cfg.max_text_tokens + 2, (self._pool_shape[1] - cfg.len_cond) // 3)

    def _fitted_ids(self, spoken: str, language: str) -> list[torch.Tensor]:
        """`_ids` of `spoken`, cut (at words, then characters) into as many phrases as it takes to
        fit `phrase_token_limit`."""
        limit = self.phrase_token_limit
        ids = self._ids(spoken, language)
        if len(ids) <= limit:
            return [ids]
        return [self._ids(piece, language) for piece in split_to_fit(spoken, lambda t: len(self._ids(t, language)),
                                                                      limit)]

    def synthesize(self, text: str, language: str = "ar", voice: Voice | str | Path | bytes | None = None, *,
                   seed: int | None = None, exaggeration: float = 0.5, cfg_weight: float = 0.5,
                   temperature: float = 0.8, repetition_penalty: float = 2.0, min_p: float = 0.05,
                   top_p: float = 1.0, max_new_tokens: int = 1000, normalize: bool = True,
                   watermark: bool | None = None, diacritize: bool = False,
                   flow: FlowOptions | None = None) -> np.ndarray:
        """Text -> (N,) float32 audio at 24 kHz, with the official defaults.

        `watermark`: None applies the Perth watermark (as the official pipeline does) when
        resemble-perth is installed; True requires it (WatermarkUnavailable if missing); False skips it.
        """
        marker = watermarker_for(watermark)  # a required-but-missing watermark fails before any work
        solver = self._solver_for(flow)
        voice = self._voice(voice, exaggeration)
        params = SamplingParams(cfg_weight=cfg_weight, temperature=temperature, repetition_penalty=repetition_penalty,
                                min_p=min_p, top_p=top_p, max_new_tokens=max_new_tokens)
        gen = torch.Generator(device=self.device)  # on the model's device: a CPU one cannot draw CUDA noise
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**31))
        ids = self.text_ids(text, language, normalize, diacritize)
        with torch.inference_mode():
            cond = self.t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
            res = generate_speech_tokens(self.t3, cond, ids, params, generator=gen)
            if not res.tokens:
                return np.zeros(0, dtype=np.float32)
            tokens = torch.tensor(res.tokens, device=self.device).reshape(1, -1)
            noise_gen = gen
            wav, _ = self.s3gen.inference(tokens, voice.gen.to(self.device), generator=noise_gen,
                                          solver=solver)
        out = wav[0].float().cpu().numpy()
        return marker.apply(out, SAMPLE_RATE) if marker is not None else out

    # ------------------------------------------------------------------ streaming

    @property
    def pool(self) -> KVPool:
        with self._lazy_lock:
            if self._pool is None:
                slots, max_len = self._pool_shape
                w = self.t3.speech_head.weight
                self._pool = KVPool(self.t3.cfg.llama, slots, max_len, device=w.device, dtype=w.dtype)
            return self._pool

    @property
    def stream_capacity(self) -> int:
        """Streams that can be admitted at once: the KV slots, plus as many waiting in the
        scheduler's queue when streams are batched (without it, a full pool refuses at once)."""
        slots = self._pool_shape[0]
        return 2 * slots if self._use_scheduler else slots

    def _solver_for(self, flow: FlowOptions | None):
        """The solver of a per-call flow choice; the loaded decoder cannot change per call."""
        if flow is None:
            return self._solver
        if not isinstance(flow, FlowOptions):
            raise TypeError(f"flow must be a FlowOptions, got {type(flow).__name__}")
        if flow.kind != self.flow.kind:
            raise ValueError(f"this TTS loaded the {self.flow.kind} decoder; a {flow.kind} flow needs "
                             f"TTS(..., flow={flow.kind!r})")
        return flow.solver()

    def _voice(self, voice, exaggeration: float | None) -> Voice:
        """None: the built-in voice; exaggeration None keeps the voice's own value."""
        if voice is None:
            if self.default_voice is None:
                raise VoiceError("this checkpoint has no conds.pt: pass voice=<reference clip>")
            voice = self.default_voice
        elif not isinstance(voice, Voice):
            voice = self.prepare_voice(voice, exaggeration=0.5 if exaggeration is None else exaggeration)
        return voice if exaggeration is None else voice.with_exaggeration(exaggeration)

    def phrases(self, text: str, language: str = "ar", normalize: bool = True, segment: bool = True,
                diacritize: bool = False) -> list[Phrase]:
        """Cut a request into phrases (or keep it whole) and tokenize each: errors surface here,
        before any audio. A phrase longer than `phrase_token_limit` after the frontend is cut
        further, so any text is spoken. `diacritize` adds harakat to Arabic (needs the `tashkeel`
        extra)."""
        from .text.segment import PhraseSegmenter

        if segment:
            seg = PhraseSegmenter()
            pieces = seg.feed(text) + seg.flush()
        else:
            pieces = [text]
        out, start = [], 0
        for piece in pieces:  # exact consecutive slices of `text` (PhraseSegmenter's contract)
            spoken = self._spoken(piece, language, normalize, diacritize)
            # a phrase of punctuation or spaces only says nothing; one too long for the model is
            # spoken as several, each naming the slice it was cut from
            for ids in self._fitted_ids(spoken, language) if spoken else ():
                out.append(Phrase(piece, start, ids))
            start += len(piece)
        if not out:
            raise ValueError("nothing to say: the text is empty after normalization")
        return out

    def stream(self, text: str, voice: Voice | str | Path | bytes | None = None, language: str = "ar", *,
               params: SamplingParams | None = None, seed: int | None = None, exaggeration: float | None = None,
               guard: GuardConfig | str | None = "official", schedule: ChunkSchedule | None = None,
               normalize: bool = True, segment: bool = True, diacritize: bool = False,
               flow: FlowOptions | None = None) -> SpeechStream:
        """Speak `text` as a stream of `AudioChunk`s (24 kHz float32) while T3 is still generating.

        `voice`: a `Voice` (e.g. from `tts.voices.get(id)`), a reference clip, a nutq voice file, or
        None for the built-in voice; `exaggeration` None keeps the voice's own value. `params`
        defaults to the official sampling settings; `guard` is a profile name, a `GuardConfig` or
        None (no alignment guard); `schedule` sets the chunk sizes (default: the decoder's,
        `self.flow.schedule()`). `segment=False` speaks the text
        as one utterance (as the official `generate` does) instead of phrase by phrase.
        `diacritize` adds harakat to undiacritized Arabic first (the `tashkeel` extra).
        `flow` changes the loaded decoder's steps or CFG for this stream only (same kind as `self.flow`).
        """
        t_request = time.perf_counter()
        params = params or SamplingParams()
        guard_cfg = resolve_guard(guard)
        solver = self._solver_for(flow)
        schedule = schedule or self.flow.schedule()
        phrases = self.phrases(text, language, normalize, segment, diacritize)
        v = self._voice(voice, exaggeration)
        seed = seed if seed is not None else int(torch.seed() % 2**31)
        gen, noise = torch.Generator(device=self.device), torch.Generator(device=self.device)
        gen.manual_seed(seed)
        noise.manual_seed(seed + 1)
        pool = self.pool

        def make(phrase: Phrase) -> Session:
            return Session(self.t3, self.s3gen, pool, phrase.ids, v, params, guard_cfg, schedule, gen, noise, solver)

        runner = self.start_scheduler().run if self._use_scheduler else None
        return SpeechStream(phrases, make, SAMPLE_RATE, t_request, runner)

    def astream(self, *args, **kw) -> AsyncSpeechStream:
        """`async for chunk in tts.astream(...)`: `stream` driven from a worker thread."""
        return AsyncSpeechStream(self.stream(*args, **kw))

    def start_scheduler(self) -> Scheduler:
        """The scheduler that decodes all streams together (started once; `close()` stops it)."""
        pool = self.pool
        with self._lazy_lock:
            if self._scheduler is None:
                self._scheduler = Scheduler(self.t3, self.s3gen, pool, max_queue=self._pool_shape[0])
            return self._scheduler

    def scheduler_stats(self):
        """The running scheduler's `SchedulerStats`, or None (no scheduler, or not started yet)."""
        sched = self._scheduler
        return sched.stats() if sched is not None else None

    def close(self) -> None:
        """Stop the scheduler, if one runs; its unfinished streams fail with SchedulerClosed."""
        with self._lazy_lock:
            sched, self._scheduler = self._scheduler, None
        if sched is not None:
            sched.close()

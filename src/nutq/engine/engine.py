"""`Engine(files, EngineConfig)`: the one owner of a loaded model and everything that runs it.

It holds T3, S3Gen and the voice encoder, the tokenizer and the Arabic text frontend, the voice
cache, the KV pool and the scheduler (with its vocoder thread). Every stream goes through the
scheduler, a lone stream too (a batch of one); the plain loop of `engine.generate` (offline
`synthesize`) and `Session.run()` stay as the reference the scheduler is tested against.
Pool and scheduler start on the first stream (or `start()`), so that an engine used offline only
allocates no cache.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..audio.watermark import watermarker_for
from ..checkpoints import files as ckfiles
from ..errors import ClientError
from ..models.loading import DTYPES
from ..models.quant import load_t3
from ..models.registry import configs_from_sidecar, load_component, load_meanflow
from ..rates import SAMPLE_RATE
from .config import EngineConfig, kv_bytes_per_slot, slots_for_memory
from .flow_options import FlowOptions
from .generate import generate_speech_tokens
from .kv_pool import ROWS_PER_SESSION, KVPool
from .phrases import PhrasePlanner
from .request import SynthesisRequest
from .scheduler import LoopStep, Scheduler
from .session import Session, resolve_guard
from .stream import Phrase, SpeechStream
from .voice import Voice, VoiceError, load_conds, prepare_voice

if TYPE_CHECKING:
    from .scheduler import SchedulerStats
    from .speculative import SpecConfig
    from .voice_cache import VoiceCache

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class Engine:
    """Loads the official files once (`files`: a resolved checkpoint) as `config` says."""

    def __init__(self, files: ckfiles.CheckpointFiles, config: EngineConfig = EngineConfig()):
        self.files = files
        self.config = cfg = config.resolve()
        self.device = torch.device(cfg.device)
        self.flow = cfg.flow
        if self.device.type == "cuda" and cfg.tf32:
            # fp32 parts (voice encoder, HiFT, an fp32 T3 or flow) run their matmuls on tensor cores
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # A missing meanflow file fails here, before any loading.
        self._meanflow_file = meanflow_file = files.meanflow if self.flow.meanflow else None
        cfgs = configs_from_sidecar(files.sidecar)
        # "int8"/"int4": weight-only quantized linears (nutq.models.quant); floats are cast.
        self.t3 = load_t3(files.root, cfgs["t3"], cfg.dtype, device=self.device)
        self.ve = load_component(files.root, "ve", cfgs["ve"], device=self.device)
        if meanflow_file is not None:
            self.s3gen = load_meanflow(meanflow_file, cfgs["s3gen"], device=self.device)
        else:
            self.s3gen = load_component(files.root, "s3gen", cfgs["s3gen"], device=self.device)
        self._solver = self.flow.solver()
        self._ort_t3 = self._attach_backend()
        self.speculative = self._speculative()
        from .precision_guard import check as check_precision

        self.precision_warnings = check_precision(files.root, cfg.dtype, cfg.flow_dtype)
        if cfg.flow_dtype:
            self.s3gen.flow.to(DTYPES[cfg.flow_dtype])
        from ..text.tokenizer import MTLTokenizer

        self.tokenizer = MTLTokenizer.from_file(files.tokenizer)
        self.default_voice: Voice | None = load_conds(files.conds) if files.conds else None
        self.slots = cfg.max_sessions or self._slots_from_gpu_memory()
        self.planner = PhrasePlanner(self.tokenizer, self.t3.cfg, cfg.max_cache_len)
        self._lock = threading.Lock()
        self._pool: KVPool | None = None
        self._scheduler: Scheduler | None = None
        self._voices = None
        self._model_id: str | None = None
        log.info("engine: %s, T3 %s, flow %s (%s), %d KV slots x %d positions, %d more may queue", self.device,
                 cfg.dtype or "fp32", self.flow.label, cfg.flow_dtype or "fp32", self.slots, cfg.max_cache_len,
                 cfg.max_queue)
        if self.speculative is not None:
            log.info("engine: speculative T3 decoding with draft %s, k=%d to start, while <= %d streams step together%s",
                     cfg.draft, cfg.spec_k, cfg.spec_max_batch,
                     f", LOSSY tolerance {cfg.spec_tolerance}" if cfg.spec_tolerance else "")

    def _attach_backend(self):
        """"onnxruntime": the graphs of `nutq export onnx` run T3's backbone in `synthesize` and
        the flow and HiFT everywhere (engine.ort_backend); "torch": everything in PyTorch."""
        if self.config.backend == "torch":
            return None
        if self.device.type != "cpu":
            raise ClientError("the onnxruntime backend runs on the CPU: use device='cpu'")
        if self.t3.text_emb.weight.dtype != torch.float32:
            raise ClientError("the onnxruntime backend runs the fp32 graphs: leave dtype unset (or fp32)")
        from .ort_backend import attach

        return attach(self.t3, self.s3gen, self.config.onnx_dir)

    def _speculative(self) -> "SpecConfig | None":
        cfg = self.config
        if cfg.draft is None:
            return None
        from .draft import resolve_draft
        from .speculative import SpecConfig

        draft = resolve_draft(str(cfg.draft), self.t3)
        return SpecConfig(k=cfg.spec_k, draft=draft, k_max=max(8, cfg.spec_k), tolerance=cfg.spec_tolerance,
                          max_batch=cfg.spec_max_batch)

    def _slots_from_gpu_memory(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        llama = self.t3.cfg.llama
        per_slot = kv_bytes_per_slot(llama.num_layers, llama.num_kv_heads, llama.head_dim, self.config.max_cache_len,
                                     self.t3.speech_head.weight.dtype, ROWS_PER_SESSION)
        slots = slots_for_memory(free, per_slot)
        log.info("KV pool sized from GPU memory: %.1f GiB free, %.0f MiB per session -> %d sessions",
                 free / 2**30, per_slot / 2**20, slots)
        return slots

    # ------------------------------------------------------------------ voices and identity

    @property
    def model_id(self) -> str:
        """Identity of the weights voices depend on (voice files record it; cheap, computed once)."""
        if self._model_id is None:
            from .voice_format import model_fingerprint

            self._model_id = model_fingerprint(self.files.root, self._meanflow_file)
        return self._model_id

    def prepare_voice(self, src, sr: int | None = None, exaggeration: float = 0.5) -> Voice:
        """A voice from a reference clip (path, bytes, or array with `sr`), or from a nutq voice
        file (`.safetensors`, see `nutq.engine.voice_format`)."""
        if isinstance(src, (str, Path)) and str(src).endswith(".safetensors"):
            from .voice_format import load_voice

            return load_voice(src, model=self.model_id).with_exaggeration(exaggeration)
        with torch.inference_mode():
            return prepare_voice((self.ve, self.s3gen, self.t3.cfg.prompt_len), src, sr, exaggeration)

    @property
    def voices(self) -> "VoiceCache":
        """The voice cache: voices by id or clip content, LRU in memory, persisted under the
        config's `voice_store` when one was given; "default" is the checkpoint's built-in voice."""
        with self._lock:
            if self._voices is None:
                from .voice_cache import VoiceCache

                self._voices = VoiceCache(self.prepare_voice, store_dir=self.config.voice_store,
                                          default=self.default_voice, model=self.model_id)
            return self._voices

    def voice(self, voice, exaggeration: float | None) -> Voice:
        """None: the built-in voice; a `Voice` as is; anything else a clip or voice file.
        `exaggeration` None keeps the voice's own value."""
        if voice is None:
            if self.default_voice is None:
                raise VoiceError("this checkpoint has no conds.pt: pass voice=<reference clip>")
            voice = self.default_voice
        elif not isinstance(voice, Voice):
            voice = self.prepare_voice(voice, exaggeration=0.5 if exaggeration is None else exaggeration)
        return voice if exaggeration is None else voice.with_exaggeration(exaggeration)

    # ------------------------------------------------------------------ text

    def text_ids(self, text: str, language: str = "ar", normalize: bool = True,
                 diacritize: bool = False) -> torch.Tensor:
        """[SOT] + tokenizer ids + [EOT] for one utterance (TextTooLong beyond T3's text positions)."""
        return self.planner.utterance_ids(text, language, normalize, diacritize)

    def phrases(self, text: str, language: str = "ar", normalize: bool = True, segment: bool = True,
                diacritize: bool = False) -> list[Phrase]:
        """The request's phrases, tokenized (errors surface here, before any audio)."""
        return self.planner.plan(text, language, normalize, segment, diacritize)

    # ------------------------------------------------------------------ offline (reference path)

    def synthesize(self, request: SynthesisRequest, watermark: bool | None = None) -> np.ndarray:
        """Text -> (N,) float32 audio at 24 kHz in one utterance, on the plain reference loop (the
        official pipeline's order of operations). `watermark`: None applies the Perth watermark
        when resemble-perth is installed; True requires it; False skips it."""
        marker = watermarker_for(watermark)  # a required-but-missing watermark fails before any work
        solver = self._solver_for(request.flow)
        voice = self.voice(request.voice, request.exaggeration)
        gen = torch.Generator(device=self.device)  # on the model's device: a CPU one cannot draw CUDA noise
        gen.manual_seed(request.seed if request.seed is not None else int(torch.seed() % 2**31))
        ids = self.text_ids(request.text, request.lang, request.normalize, request.diacritize)
        with torch.inference_mode():
            cond = self.t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
            res = generate_speech_tokens(self._ort_t3 or self.t3, cond, ids, request.params, generator=gen)
            if not res.tokens:
                return np.zeros(0, dtype=np.float32)
            tokens = torch.tensor(res.tokens, device=self.device).reshape(1, -1)
            wav, _ = self.s3gen.inference(tokens, voice.gen.to(self.device), generator=gen, solver=solver)
        out = wav[0].float().cpu().numpy()
        return marker.apply(out, SAMPLE_RATE) if marker is not None else out

    # ------------------------------------------------------------------ streaming (the one runtime path)

    def stream(self, request: SynthesisRequest, limit: int | None = None) -> SpeechStream:
        """`request` spoken as a stream of `AudioChunk`s (iterate it, or `async for` it on a loop)
        while T3 is still generating, decoded by the scheduler together with every other stream.
        Bad text, options or voices raise here, before any audio. `limit`: chunks made ahead of
        the consumer at most (None: the scheduler's bound)."""
        t_request = time.perf_counter()
        guard = resolve_guard(request.guard)
        solver = self._solver_for(request.flow)
        schedule = request.schedule or self.flow.schedule()
        phrases = self.phrases(request.text, request.lang, request.normalize, request.segment, request.diacritize)
        v = self.voice(request.voice, request.exaggeration)
        seed = request.seed if request.seed is not None else int(torch.seed() % 2**31)
        gen, noise = torch.Generator(device=self.device), torch.Generator(device=self.device)
        gen.manual_seed(seed)
        noise.manual_seed(seed + 1)
        scheduler = self.start()
        pool, params = scheduler.pool, request.params

        def make(phrase: Phrase) -> Session:
            return Session(self.t3, self.s3gen, pool, phrase.ids, v, params, guard, schedule, gen, noise, solver)

        return SpeechStream(phrases, make, SAMPLE_RATE, t_request, scheduler.run, limit)

    @property
    def pool(self) -> KVPool:
        """The KV pool, allocated on first use."""
        with self._lock:
            if self._pool is None:
                w = self.t3.speech_head.weight
                self._pool = KVPool(self.t3.cfg.llama, self.slots, self.config.max_cache_len, device=w.device,
                                    dtype=w.dtype)
            return self._pool

    def start(self) -> Scheduler:
        """The scheduler (started once: its CUDA graphs are captured here, so call it at warm-up)."""
        pool = self.pool
        with self._lock:
            if self._scheduler is None:
                step = LoopStep(self.t3, pool) if self.config.step == "loop" else None
                self._scheduler = Scheduler(self.t3, self.s3gen, pool, step, max_queue=self.config.max_queue,
                                            vocoder_batch=self.config.vocoder_batch, speculative=self.speculative)
            return self._scheduler

    @property
    def capacity(self) -> int:
        """Streams admitted at once: decoding in the KV slots plus waiting in the scheduler's queue;
        beyond that a new stream is refused with `SchedulerBusy` (retryable)."""
        return self.slots + self.config.max_queue

    def stats(self) -> "SchedulerStats | None":
        """The scheduler's counters, or None before the first stream."""
        sched = self._scheduler
        return sched.stats() if sched is not None else None

    def close(self) -> None:
        """Stop the scheduler; its unfinished streams fail with SchedulerClosed. Idempotent."""
        with self._lock:
            sched, self._scheduler = self._scheduler, None
        if sched is not None:
            sched.close()

    def _solver_for(self, flow: FlowOptions | None):
        """The solver of a per-request flow choice; the loaded decoder cannot change per request."""
        if flow is None:
            return self._solver
        if not isinstance(flow, FlowOptions):
            raise ClientError(f"flow must be a FlowOptions, got {type(flow).__name__}")
        if flow.kind != self.flow.kind:
            raise ClientError(f"this engine loaded the {self.flow.kind} decoder; a {flow.kind} flow needs "
                              f"EngineConfig(flow={flow.kind!r})")
        return flow.solver()


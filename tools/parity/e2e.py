"""End-to-end parity fixture: the official `ChatterboxMultilingualTTS.generate` with fixed speech tokens.

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/e2e.py --out tests/golden/e2e.safetensors
    ... --size full --ckpt DIR --out /tmp/e2e_full.safetensors   (DIR from `nutq make-checkpoint --size full`)

Both sides run the same checkpoint files. Tiny: this script writes nutq's tiny random checkpoint
(`make_checkpoint(tmp, "tiny", seed)`, which the test re-creates bit for bit) and loads it with the
official, unchanged `ChatterboxMultilingualTTS.from_local`, whose constructors (`VoiceEncoder`, `T3`,
`S3Gen` in `chatterbox.mtl_tts`) are swapped for the official classes built at nutq's tiny sizes by
the sibling generators; `from_local` then loads every file with the official strict
`load_state_dict`. Full: `from_local(--ckpt)` as it is. The built-in voice is the checkpoint's
`conds.pt`.

Fixed in `generate`:
- speech tokens: `t3.inference` is replaced by a function returning `in.tokens` + EOS, as the
  official T3 returns them (1, N+1); it records the text ids T3 was given (`out.text_ids`, cond row);
- randomness: `torch.manual_seed(in.seed)` right before `generate`. With T3 replaced, the first
  draws are the flow's noise (`randn_like(mu)`) and then HiFT's source phases and noise; nutq
  reproduces them from a CPU `torch.Generator` seeded the same (same draws, same order);
- watermark: the official output is Perth-watermarked; `watermarker.apply_watermark` is wrapped to
  record its input, so `out.wav` is the official waveform before the watermark;
- HiFT `conv_post`: magnitude ×0.3 and log-magnitude biases −3 (as tools/parity/hift.py; the test
  does the same), otherwise random weights put most samples on the ±0.99 clamp.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from unittest import mock

import common  # noqa: F401  (first: sys.path without tools/parity, nutq's src/ in front, HF offline)
import torch

TEXT = "مرحبا بكم في نطق، هذا اختبار للنطق الكامل"
N_TOKENS = {"tiny": 30, "full": 100}
EXAGGERATION = 0.5


def sibling(name: str):
    """Another generator of this folder, loaded by path (several are named like real packages)."""
    spec = importlib.util.spec_from_file_location(f"_parity_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_s3gen(seed: int, meanflow: bool = False):
    """The official `S3Token2Wav(meanflow)` with its parts built at nutq's tiny sizes."""
    from chatterbox.models.s3gen import s3gen as s3gen_mod

    from nutq.models.s3gen.model import S3GEN_TINY

    def tiny_flow(**_):
        flow = sibling("flow").build_official("tiny", meanflow=meanflow)
        # nutq's tiny S3Gen keeps the full 6561-token vocabulary (T3 emits those ids).
        flow.vocab_size = S3GEN_TINY.flow.vocab_size
        flow.input_embedding = torch.nn.Embedding(flow.vocab_size, flow.input_embedding.embedding_dim)
        return flow

    parts = {
        "S3Tokenizer": lambda *_: sibling("s3tokenizer").build_official("tiny", seed)[0],
        "CAMPPlus": lambda **_: sibling("campplus").build_official("tiny", seed)[0],
        # the full-size encoder/estimator/F0 predictor are only passed into the two below
        "UpsampleConformerEncoder": lambda **_: None, "ConditionalDecoder": lambda **_: None,
        "CausalConditionalCFM": lambda **_: None, "ConvRNNF0Predictor": lambda **_: None,
        "CausalMaskedDiffWithXvec": tiny_flow,
        "HiFTGenerator": lambda **_: sibling("hift").build("tiny"),
    }
    with mock.patch.multiple(s3gen_mod, **parts):
        return s3gen_mod.S3Token2Wav(meanflow=meanflow)  # the official __init__, with tiny parts


def tiny_constructors(seed: int) -> dict:
    """Replacements for the three constructors `from_local` calls, building nutq's tiny sizes."""
    from chatterbox.models.voice_encoder.config import VoiceEncConfig
    from chatterbox.models.voice_encoder.voice_encoder import VoiceEncoder

    from nutq.models.voice_encoder import TINY as VE_TINY

    class TinyVEConfig(VoiceEncConfig):
        ve_hidden_size = VE_TINY.hidden_size
        speaker_embed_size = VE_TINY.embed_size

    return {
        "VoiceEncoder": lambda: VoiceEncoder(TinyVEConfig()),
        "T3": lambda hp: sibling("t3").build_official("tiny", seed)[0],
        "S3Gen": lambda: tiny_s3gen(seed),
    }


def load_official(size: str, ckpt: Path, seed: int):
    from chatterbox import mtl_tts

    if size == "full":
        return mtl_tts.ChatterboxMultilingualTTS.from_local(ckpt, "cpu")
    with mock.patch.multiple(mtl_tts, **tiny_constructors(seed)):
        return mtl_tts.ChatterboxMultilingualTTS.from_local(ckpt, "cpu")


def main() -> None:
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="checkpoint directory (required for --size full)")
    args = ap.parse_args()
    if args.size == "full" and args.ckpt is None:
        ap.error("--size full needs --ckpt DIR (nutq make-checkpoint DIR --size full)")
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            from nutq.checkpoints.make import make_checkpoint

            ckpt = make_checkpoint(Path(tmp), size="tiny", seed=args.seed).root
        tts = load_official(args.size, ckpt, args.seed)
    hift = sibling("hift")
    hift.adjust_conv_post(tts.s3gen.mel2wav, **hift.CONV_POST_ADJUST)

    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, 6561, (N_TOKENS[args.size],), generator=g)
    rng_seed = args.seed + 5
    rec = {}

    def fixed_t3_inference(*, t3_cond, text_tokens, **_):
        rec["text_ids"] = text_tokens[0].clone()
        eos = torch.tensor([tts.t3.hp.stop_speech_token])
        return torch.cat([tokens, eos])[None]

    real_watermark = tts.watermarker.apply_watermark

    def recording_watermark(wav, sample_rate, **kw):
        rec["wav"] = torch.from_numpy(wav.copy())
        return real_watermark(wav, sample_rate=sample_rate, **kw)

    tts.t3.inference = fixed_t3_inference
    tts.watermarker.apply_watermark = recording_watermark
    torch.manual_seed(rng_seed)
    tts.generate(TEXT, language_id="ar", exaggeration=EXAGGERATION)

    common.save(args.out, {"in.tokens": tokens, "out.text_ids": rec["text_ids"], "out.wav": rec["wav"]},
                {"size": args.size, "seed": args.seed, "rng_seed": rng_seed, "text": TEXT,
                 "exaggeration": EXAGGERATION, "conv_post_adjust": hift.CONV_POST_ADJUST,
                 "checkpoint": "make_checkpoint(tiny, seed)" if args.ckpt is None else str(args.ckpt)})


if __name__ == "__main__":
    main()

"""Golden S3 tokenizer outputs from the official chatterbox-tts 0.1.7 (run in the reference env).

Builds chatterbox's `S3Tokenizer` wrapper around `s3tokenizer.model_v2.S3TokenizerV2` (tiny: nutq's
S3_TOKENIZER_TINY sizes; full: official sizes), fills it with nutq's deterministic random weights
except the `_mel_filters` / `window` DSP buffers, and records on two synthetic utterances of
different lengths (neither a whole number of tokens):
  out.mel_filters, out.window        the official DSP buffers (librosa slaney bank, periodic Hann)
  out.mel0, out.mel1 (128, T_i)      `log_mel_spectrogram(wav_i[None])[0]`, one utterance at a time
  out.tokens (2, T'), out.token_lens the wrapper's `forward([wav0, wav1])` (batched, mels zero-padded)
  out.hidden (2, T', C)              encoder output for that batch; out.fsq (2, T', 8) = tanh(project_down)*0.999
  out.tokens_maxlen (1, 50), ...     `forward([wav1], max_len=50)` (mel cut to 200 frames, as T3's prompt)

The wrapper calls `S3TokenizerV2.__init__(name)` without passing a config, so the tiny size is set
by temporarily replacing that constructor's default `ModelConfig`.

This file shares its name with the official `s3tokenizer` package: `import common` must come first
(it takes tools/parity/ off sys.path), and the sibling generator campplus.py, whose synthetic voice
this reuses, is therefore loaded by file path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from unittest import mock

import common  # noqa: F401  (first: sys.path without tools/parity, HF offline)
import torch

MAX_LEN = 50  # tokens; the T3 prompt uses 150 (6 s), the fixture keeps it short


def synthetic_voice(num_samples: int, seed: int) -> torch.Tensor:
    spec = importlib.util.spec_from_file_location("_parity_campplus", Path(__file__).with_name("campplus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_voice(num_samples, seed)


def build_official(size: str, seed: int):
    from chatterbox.models.s3tokenizer import S3Tokenizer
    from s3tokenizer import model_v2

    from nutq.models.random_init import randomize_module
    from nutq.models.s3gen.s3tokenizer import S3_TOKENIZER_FULL, S3_TOKENIZER_TINY

    cfg = S3_TOKENIZER_TINY if size == "tiny" else S3_TOKENIZER_FULL
    official_cfg = model_v2.ModelConfig(n_mels=cfg.n_mels, n_audio_state=cfg.n_state,
                                        n_audio_head=cfg.n_head, n_audio_layer=cfg.n_layer)
    with mock.patch.object(model_v2.S3TokenizerV2.__init__, "__defaults__", (official_cfg,)):
        model = S3Tokenizer("speech_tokenizer_v2_25hz")
    randomize_module(model, seed, keep_suffixes=("_mel_filters", "window"))
    return model.eval(), cfg


def main():
    args = common.parser(__doc__).parse_args()
    from s3tokenizer.utils import padding

    model, cfg = build_official(args.size, args.seed)
    wavs = [synthetic_voice(30_517, args.seed + 10), synthetic_voice(43_301, args.seed + 11)]  # 1.9 s, 2.7 s
    tensors = {"in.wav0": wavs[0], "in.wav1": wavs[1],
               "out.mel_filters": model._mel_filters, "out.window": model.window}
    with torch.inference_mode():
        mels = [model.log_mel_spectrogram(w[None])[0] for w in wavs]
        tensors["out.mel0"], tensors["out.mel1"] = mels
        tokens, token_lens = model(wavs)
        tensors["out.tokens"], tensors["out.token_lens"] = tokens, token_lens
        batch, batch_lens = padding(mels)
        hidden, _ = model.encoder(batch, batch_lens)
        tensors["out.hidden"] = hidden
        tensors["out.fsq"] = model.quantizer._codebook.project_down(hidden).tanh() * 0.999
        tokens, token_lens = model([wavs[1]], max_len=MAX_LEN)
        tensors["out.tokens_maxlen"], tensors["out.token_lens_maxlen"] = tokens, token_lens
    meta = {"size": args.size, "seed": args.seed, "max_len": MAX_LEN, "config": dict(cfg.__dict__)}
    common.save(args.out, tensors, meta)


if __name__ == "__main__":
    main()

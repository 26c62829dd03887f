"""Write the official state-dict listings into tests/fixtures/statedicts/ (reference env).

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/statedicts.py --out tests/fixtures/statedicts

One `key (shape) dtype` line per tensor, in `state_dict()` order, as the official chatterbox-tts
0.1.7 modules build them at their released sizes; `key None` for an entry that is None. The
structure tests check nutq's modules against these files, so a loader that reproduces exactly
these keys and shapes can load the official checkpoints.

The model modules are built on the meta device (shapes and dtypes without allocating ~3 GB). The
built-in voice (`conds.pt`) is not a module: it is what `prepare_conditionals` saves, so that
listing comes from running it, on real CPU tensors with random weights, on a fixed 12 s
synthetic clip (the shapes depend on the clip's length, not on the weights or the samples).

`tests/test_statedict_listings.py` (marked `refenv`) runs this into a temporary directory and
checks that every file comes out byte-identical to the committed one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common  # noqa: F401 - sys.path and HF_HUB_OFFLINE for the official imports

# S3Gen sub-listing -> (key prefix kept, key prefixes dropped). Sub-listings are filters of
# the full S3Gen listing, so they keep its order.
S3GEN_PARTS = {
    "s3gen_s3tokenizer.txt": ("tokenizer.", ()),
    "s3gen_campplus_speaker_encoder.txt": ("speaker_encoder.", ()),
    "s3gen_flow_encoder.txt": ("flow.encoder.", ()),
    "s3gen_flow_decoder_estimator.txt": ("flow.decoder.estimator.", ()),
    "s3gen_flow_misc.txt": ("flow.", ("flow.encoder.", "flow.decoder.")),
    "s3gen_hift_mel2wav.txt": ("mel2wav.", ()),
}


def line(key: str, value) -> str:
    if value is None:
        return f"{key} None"
    dtype = str(value.dtype).removeprefix("torch.")
    return f"{key} ({','.join(str(d) for d in value.shape)}) {dtype}"


def listing(items) -> str:
    return "".join(line(k, v) + "\n" for k, v in items)


def turbo_t3_config():
    """The Turbo T3 hyperparameters, as `ChatterboxTurboTTS.from_local` sets them."""
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def conds_items(s3gen, ve) -> list:
    """The entries of the `conds.pt` that the official `prepare_conditionals` would write."""
    import numpy as np
    import soundfile as sf
    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS
    from chatterbox.models.t3.modules.t3_config import T3Config

    class T3Hparams:  # all prepare_conditionals reads of T3
        hp = T3Config.multilingual()

    tts = ChatterboxMultilingualTTS.__new__(ChatterboxMultilingualTTS)
    tts.s3gen, tts.ve, tts.t3, tts.device = s3gen, ve, T3Hparams(), "cpu"
    sr = 24000
    t = np.arange(12 * sr) / sr
    clip = 0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    with tempfile.TemporaryDirectory() as tmp:
        wav, saved = Path(tmp) / "ref.wav", Path(tmp) / "conds.pt"
        sf.write(wav, clip.astype(np.float32), sr)
        with torch.inference_mode():
            tts.prepare_conditionals(str(wav))
        tts.conds.save(saved)
        state = torch.load(saved, map_location="cpu", weights_only=True)
    return [(f"{part}.{k}", v) for part in ("t3", "gen") for k, v in state[part].items()]


def write_all(out: Path) -> None:
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder

    out.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        files = {
            "t3_mtl23ls_v2.txt": T3(T3Config.multilingual()).state_dict(),
            "turbo_t3_gpt2.txt": T3(turbo_t3_config()).state_dict(),
            "ve.txt": VoiceEncoder().state_dict(),
        }
        meanflow = S3Gen(meanflow=True).state_dict()
    torch.manual_seed(0)
    s3gen, ve = S3Gen().eval(), VoiceEncoder().eval()  # real tensors: conds.pt needs a forward pass
    full = s3gen.state_dict()
    files["s3gen_full.txt"] = full
    for name, (keep, drop) in S3GEN_PARTS.items():
        files[name] = {k: v for k, v in full.items() if k.startswith(keep) and not k.startswith(drop)}
    files["turbo_s3gen_meanflow_extra_keys.txt"] = {k: v for k, v in meanflow.items() if k not in full}
    for name, sd in files.items():
        (out / name).write_text(listing(sd.items()))
    (out / "conds.txt").write_text(listing(conds_items(s3gen, ve)))
    print(f"wrote {len(files) + 1} listings to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=common.REPO / "tests" / "fixtures" / "statedicts")
    write_all(ap.parse_args().out)


if __name__ == "__main__":
    main()

"""VoiceEncoder: official state-dict layout, partial windowing and embeddings equal to the official.

Golden data: tools/parity/voice_encoder.py runs the official `VoiceEncoder.embeds_from_wavs` on
synthetic 16 kHz clips with `randomize_module` weights (TINY widths; `--size full` live below).
Embedding tolerance: max abs diff ≤ 1e-5 on unit vectors. Both sides are float32; the
differences left (measured ~1e-7) come from the mel's float32 rounding and LSTM batch shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import load_golden, run_generator
from nutq.models.random_init import randomize_module
from nutq.models.voice_encoder import FULL, TINY, VoiceEncoder, VoiceEncoderConfig

EMBED_ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # A batch of a few 160-step LSTM sequences gains nothing from threads, and on a loaded
    # 2-core runner OpenMP's barrier spinning made the first call take seconds instead of ms.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def golden():
    return load_golden("voice_encoder")


def _model(meta) -> VoiceEncoder:
    cfg = TINY if meta["size"] == "tiny" else FULL
    assert (cfg.hidden_size, cfg.embed_size) == (meta["hidden_size"], meta["embed_size"])
    return randomize_module(VoiceEncoder(cfg), meta["seed"]).eval()


def test_full_state_dict_equals_official_listing(statedict_listing):
    with torch.device("meta"):
        ve = VoiceEncoder(FULL)
    got = [(k, tuple(v.shape)) for k, v in ve.state_dict().items()]
    assert got == list(statedict_listing("ve.txt").items()), "keys, order and shapes of the official ve.pt"
    assert sum(v.numel() for v in ve.parameters()) == 1_423_618  # the official VE's 1.42 M parameters


def test_tiny_keeps_the_key_structure():
    with torch.device("meta"):
        full, tiny = VoiceEncoder(FULL), VoiceEncoder(TINY)
    assert list(full.state_dict()) == list(tiny.state_dict())


def test_full_loads_an_official_layout_state_dict_strictly(statedict_listing):
    sd = {k: torch.zeros(s) for k, s in statedict_listing("ve.txt").items()}
    VoiceEncoder(FULL).load_state_dict(sd, strict=True)


def test_partial_windows_equal_official_rule(golden):
    t, meta = golden
    assert FULL.frame_step == TINY.frame_step == meta["frame_step"] == 77
    table = t["out.num_wins"].tolist()
    bad = [(n, FULL.partial_windows(n), (w, tgt)) for n, w, tgt in table if FULL.partial_windows(n) != (w, tgt)]
    assert not bad, f"(n_frames, nutq, official) differ: {bad[:5]}"


def test_min_coverage_decides_the_tail():
    # 210 frames: 50 leftover frames + 83 overlap = 133/160 = 0.83 >= 0.8 -> a padded 2nd window
    assert FULL.partial_windows(210) == (2, 237)
    # 190 frames: 113/160 = 0.71 < 0.8 -> the tail is dropped, one window over frames 0..159
    assert FULL.partial_windows(190) == (1, 160)
    assert FULL.partial_windows(1) == (1, 160)  # shorter than a partial: one zero-padded window
    assert VoiceEncoderConfig(min_coverage=0.5).partial_windows(190) == (2, 237)
    with pytest.raises(ValueError):
        FULL.partial_windows(0)


def test_embeddings_equal_official_per_clip(golden):
    t, meta = golden
    ve = _model(meta)
    with torch.inference_mode():
        for clip in meta["clips"]:
            got = ve.embed_utterance(t[f"in.wav.{clip}"].numpy())
            want = t[f"out.embed.{clip}"][0]
            err = (got - want).abs().max().item()
            assert err <= EMBED_ATOL, f"{clip}: max abs diff {err:.2e}"
            assert abs(got.norm().item() - 1.0) < 1e-6


def test_batched_utterances_and_speaker_mean_equal_official(golden):
    t, meta = golden
    ve = _model(meta)
    wavs = [t[f"in.wav.{clip}"] for clip in meta["clips"]]  # torch inputs this time
    with torch.inference_mode():
        batch = ve.embeds_from_wavs(wavs)
        chunked = ve.embeds_from_wavs(wavs, max_batch=2)
        speaker = ve.speaker_embedding(wavs)
    assert batch.shape == (len(wavs), meta["embed_size"])
    assert (batch - t["out.embeds_batch"]).abs().max().item() <= EMBED_ATOL
    assert (chunked - batch).abs().max().item() <= EMBED_ATOL
    assert speaker.shape == (1, meta["embed_size"])
    assert (speaker - t["out.speaker"]).abs().max().item() <= EMBED_ATOL
    # prepare_conditionals does not re-normalize the mean of several utterances
    assert speaker.norm().item() < 0.999


def test_untrimmed_embedding_equals_official_and_differs_from_trimmed(golden):
    t, meta = golden
    ve = _model(meta)
    w = t["in.wav.voiced"].numpy()
    with torch.inference_mode():
        got = ve.embed_utterance(w, trim=False)
    assert (got - t["out.embed_notrim.voiced"][0]).abs().max().item() <= EMBED_ATOL
    assert (t["out.embed_notrim.voiced"] - t["out.embed.voiced"]).abs().max().item() > 1e-3


def test_silent_or_empty_reference_is_refused():
    ve = randomize_module(VoiceEncoder(TINY), 0).eval()
    with pytest.raises(ValueError, match="silence"):
        ve.embed_utterance(np.zeros(16_000, np.float32))
    with pytest.raises(ValueError, match="empty"):
        ve.embed_utterance(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="at least one"):
        ve.embeds_from_mels([])


def test_zero_embedding_raises_instead_of_nan():
    ve = randomize_module(VoiceEncoder(TINY), 0).eval()
    with torch.no_grad():
        ve.proj.bias.fill_(-1e3)  # every ReLU output 0 -> the official would divide 0 by 0
    with pytest.raises(ValueError, match="zero embedding"):
        ve.embeds_from_mels([torch.rand(200, 40)])


@pytest.mark.slow
@pytest.mark.refenv
def test_full_size_equals_official_live(tmp_path):
    out = tmp_path / "voice_encoder_full.safetensors"
    t, meta = run_generator("voice_encoder.py", out, "--size", "full")
    ve = _model(meta)
    with torch.inference_mode():
        batch = ve.embeds_from_wavs([t[f"in.wav.{c}"] for c in meta["clips"]])
        errs = {c: (ve.embed_utterance(t[f"in.wav.{c}"]) - t[f"out.embed.{c}"][0]).abs().max().item()
                for c in meta["clips"]}
    errs["batch"] = (batch - t["out.embeds_batch"]).abs().max().item()
    print("full-size max abs diff:", errs)
    assert max(errs.values()) <= EMBED_ATOL, errs

"""Parity fixture for the distilled (meanflow) S3Gen decoder and the CFG-free 10-step flow.

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/meanflow.py --out tests/golden/meanflow.safetensors
    ... --size full --ckpt DIR --out /tmp/meanflow_full.safetensors
        (DIR from `nutq make-checkpoint DIR --size full --meanflow`)

Three parts, all official chatterbox-tts 0.1.7 code in fp32 on random weights:

1. Flow. The official `CausalMaskedDiffWithXvec` with `ConditionalDecoder(meanflow=True)` (built as
   tools/parity/flow.py builds the 10-step one, tiny or full), `randomize_module(seed)`, run with
   `flow.inference(..., meanflow=True, n_timesteps=2|1, noised_mels=...)` for finalize True/False.
   The official CFM draws `z = randn_like(mu)` and then writes `noised_mels` over the generated
   frames; `randn_like` is patched to return the prompt frames of our `in.noise` and `noised_mels`
   is the rest of it, so nutq is fed the whole `in.noise` as its noise. The estimator alone with
   (t, r) is recorded too. The same fixed-noise machinery runs the 10-step flow (non-meanflow
   estimator, same seed) with `decoder.inference_cfg_rate = 0` (the official solver still runs the
   unconditional rows, with weight 0).
2. Layout. The official `S3Gen(meanflow=True).state_dict()` at full size: every key and shape,
   in order (`meta["full_keys"]`), which nutq's module must equal for strict loading.
3. End to end. nutq's checkpoint with a meanflow file (`make_checkpoint(tiny, meanflow=True)`, or
   `--ckpt` at full size) is loaded the way the official Turbo wrapper loads it:
   `S3Gen(meanflow=True).load_state_dict(safetensors.load_file(s3gen_meanflow.safetensors),
   strict=True)` (tiny: the official parts built at nutq's tiny sizes, as tools/parity/e2e.py
   does). Then the official `S3Gen.inference(tokens, ref_dict=conds.gen, n_cfm_timesteps=2)` runs
   after `torch.manual_seed(rng_seed)`. Its draws, in order: the generated frames' noise
   (`randn(1, 80, 2N)`), the full-length `randn_like(mu)`, then HiFT's source randomness. HiFT's
   `conv_post` gets the tools/parity/hift.py adjustment (realistic amplitudes) on both sides.
"""

from __future__ import annotations

import importlib.util
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import common  # noqa: F401  (first: sys.path without tools/parity, nutq's src/ in front, HF offline)
import chatterbox.mtl_tts  # noqa: F401  (before any sibling: flow.py puts tools/parity back on sys.path,
import torch  # where s3tokenizer.py would shadow the official package of that name)

from nutq.models.random_init import randomize_module

N_TOKENS = {"tiny": 30, "full": 100}


def sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_parity_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def prompt_noise(noise: torch.Tensor):
    """`randn_like(mu)` inside the official CFM returns `noise` (its first mu.shape[-1] frames)."""
    def fake_randn_like(x, *a, **k):
        return noise[..., : x.shape[-1]].expand(x.shape[0], -1, -1).to(x).clone()

    with mock.patch.object(torch, "randn_like", fake_randn_like):
        yield


def cut_mask(flow):
    """The finalize=False mask fix of tools/parity/flow.py (official mask is 6 frames too long)."""
    real = flow.decoder.forward

    def forward(mu, mask, *args, **kw):
        return real(mu, mask[..., : mu.shape[-1]], *args, **kw)

    return mock.patch.object(flow.decoder, "forward", forward)


def flow_part(size: str, seed: int) -> dict:
    flow_gen = sibling("flow")
    mf = flow_gen.build_official(size, meanflow=True)
    flow_gen.check_layout(mf, size, meanflow=True)
    randomize_module(mf, seed)
    cfm = flow_gen.build_official(size)
    randomize_module(cfm, seed)
    cfm.decoder.inference_cfg_rate = 0.0
    vocab = mf.vocab_size
    n_prompt, n_new = (50, 40) if size == "full" else (10, 15)
    g = torch.Generator().manual_seed(seed)
    prompt_token = torch.randint(0, vocab, (1, n_prompt), generator=g)
    token = torch.randint(0, vocab, (1, n_new), generator=g)
    prompt_feat = torch.randn(1, 2 * n_prompt, 80, generator=g) - 4.0
    embedding = torch.randn(1, 192, generator=g)
    noise = torch.randn(1, 80, 2 * (n_prompt + n_new), generator=g)
    t = {"in.prompt_token": prompt_token, "in.token": token, "in.prompt_feat": prompt_feat,
         "in.embedding": embedding, "in.noise": noise}
    voice = dict(prompt_token=prompt_token, prompt_token_len=torch.tensor([n_prompt]), prompt_feat=prompt_feat,
                 prompt_feat_len=None, embedding=embedding, token=token, token_len=torch.tensor([n_new]))
    with torch.inference_mode():
        for steps in (2, 1):
            for name, finalize in (("final", True), ("stream", False)):
                n_gen = 2 * n_new - (0 if finalize else 6)
                with prompt_noise(noise), cut_mask(mf):
                    mel, _ = mf.inference(**voice, finalize=finalize, n_timesteps=steps, meanflow=True,
                                          noised_mels=noise[..., 2 * n_prompt: 2 * n_prompt + n_gen])
                t[f"out.mf{steps}_{name}"] = mel
        with prompt_noise(noise):
            t["out.cfg0_final"], _ = cfm.inference(**voice, finalize=True, n_timesteps=10)

        est_in = flow_gen.estimator_inputs(g, torch.tensor([0.0, 0.5]))
        est_in["r"] = torch.tensor([0.5, 1.0])
        t.update({f"in.est_{k}": v for k, v in est_in.items()})
        t["out.est"] = mf.decoder.estimator(**est_in)
    return t


def full_keys() -> list:
    from chatterbox.models.s3gen.s3gen import S3Token2Wav

    with torch.device("meta"):
        model = S3Token2Wav(meanflow=True)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def load_official_meanflow(size: str, ckpt: Path, seed: int):
    """The official Turbo loading of a meanflow file (tiny: official parts at nutq's tiny sizes)."""
    from chatterbox.models.s3gen import s3gen as s3gen_mod
    from safetensors.torch import load_file

    model = s3gen_mod.S3Token2Wav(meanflow=True) if size == "full" else sibling("e2e").tiny_s3gen(seed, meanflow=True)
    weights = load_file(str(ckpt / "s3gen_meanflow.safetensors"))
    model.load_state_dict(weights, strict=True)  # exactly as the official Turbo wrapper
    return model.eval()


def e2e_part(size: str, ckpt: Path, seed: int) -> tuple[dict, dict]:
    from chatterbox.mtl_tts import Conditionals

    s3gen = load_official_meanflow(size, ckpt, seed)
    hift = sibling("hift")
    hift.adjust_conv_post(s3gen.mel2wav, **hift.CONV_POST_ADJUST)
    ref = Conditionals.load(ckpt / "conds.pt", map_location="cpu").gen
    g = torch.Generator().manual_seed(seed + 9)
    tokens = torch.randint(0, 6561, (1, N_TOKENS[size]), generator=g)
    rng_seed = seed + 11
    torch.manual_seed(rng_seed)
    with torch.inference_mode():
        wav, _ = s3gen.inference(speech_tokens=tokens, ref_dict=dict(ref), n_cfm_timesteps=2)
    return {"in.e2e_tokens": tokens, "out.e2e_wav": wav}, {"rng_seed": rng_seed,
                                                           "conv_post_adjust": hift.CONV_POST_ADJUST}


def main() -> None:
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="checkpoint with a meanflow file (required for --size full)")
    args = ap.parse_args()
    if args.size == "full" and args.ckpt is None:
        ap.error("--size full needs --ckpt DIR (nutq make-checkpoint DIR --size full --meanflow)")
    torch.manual_seed(0)
    tensors = flow_part(args.size, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            from nutq.checkpoints.make import make_checkpoint

            ckpt = make_checkpoint(Path(tmp), size="tiny", seed=args.seed, meanflow=True).root
        e2e, e2e_meta = e2e_part(args.size, ckpt, args.seed)
    tensors.update(e2e)
    common.save(args.out, tensors, {
        "size": args.size, "seed": args.seed, "full_keys": full_keys(), **e2e_meta,
        "checkpoint": "make_checkpoint(tiny, seed, meanflow=True)" if args.ckpt is None else str(args.ckpt),
    })


if __name__ == "__main__":
    main()

"""Parity fixture for the S3Gen flow (encoder, CFM estimator, full `inference`). Reference env only.

    /root/.cache/nutq-refenv/venv/bin/python tools/parity/flow.py --out tests/golden/flow.safetensors
    ... --size full --out /tmp/flow_full.safetensors      (official sizes, for the slow live test)

Builds the official `CausalMaskedDiffWithXvec` with `UpsampleConformerEncoder`, `CausalConditionalCFM`
and `ConditionalDecoder` exactly as `S3Gen.__init__` does (`--size full`), or at tiny sizes, fills
it with `randomize_module(seed)` and runs it in fp32 on deterministic inputs.

Tiny build: the official encoder hard-codes 512 channels in `pre_lookahead_layer` and `up_layer`
and 4 `up_encoders`, so after construction those two layers are replaced by the official classes
built at the tiny width and `up_encoders` is cut to the tiny count. The estimator and CFM take
their sizes as arguments (80 mel channels stay: `solve_euler` hard-codes them).

Fixed noise: `CausalConditionalCFM.forward` draws `z = torch.randn_like(mu)` itself. While the
official flow runs, `torch.randn_like` is patched (unittest.mock) to return the first
`mu.shape[-1]` frames of our saved noise tensor `in.noise` (batch-broadcast), so nutq can be fed
the same z. The official `decoder.forward` is also wrapped to record `mu`, `mask`, `spks` and
`cond` as the flow hands them over.

Official quirk, finalize=False: `flow.inference` truncates h by 6 frames but builds the CFM mask
from the untruncated encoder mask, which is 6 frames longer than mu; `solve_euler` then fails to
broadcast it. For the finalize=False reference the generator therefore cuts that mask to mu's
length inside the recorded `decoder.forward` wrapper (what CosyVoice 2, which this code derives
from, does). That is the only change to the official computation, and nutq does the same.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, save  # noqa: E402

import torch  # noqa: E402

from nutq.models.random_init import randomize_module  # noqa: E402


def build_official(size: str, meanflow: bool = False):
    from chatterbox.models.s3gen.configs import CFM_PARAMS
    from chatterbox.models.s3gen.decoder import ConditionalDecoder
    from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
    from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
    from chatterbox.models.s3gen.transformer.upsample_encoder import (
        PreLookaheadLayer,
        Upsample1D,
        UpsampleConformerEncoder,
    )

    if size == "full":
        d, heads, units, blocks, up_blocks, vocab = 512, 8, 2048, 6, 4, 6561
        est = dict(channels=[256], attention_head_dim=64, n_blocks=4, num_mid_blocks=12, num_heads=8)
    else:  # must equal nutq's FLOW_TINY
        d, heads, units, blocks, up_blocks, vocab = 64, 4, 128, 2, 2, 256
        est = dict(channels=[32], attention_head_dim=16, n_blocks=1, num_mid_blocks=2, num_heads=2)
    encoder = UpsampleConformerEncoder(
        output_size=d, attention_heads=heads, linear_units=units, num_blocks=blocks, dropout_rate=0.1,
        positional_dropout_rate=0.1, attention_dropout_rate=0.1, normalize_before=True,
        input_layer="linear", pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn",
        input_size=d, use_cnn_module=False, macaron_style=False,
    )
    if size != "full":
        encoder.pre_lookahead_layer = PreLookaheadLayer(channels=d, pre_lookahead_len=3)
        encoder.up_layer = Upsample1D(channels=d, out_channels=d, stride=2)
        encoder.up_encoders = torch.nn.ModuleList(list(encoder.up_encoders)[:up_blocks])
    estimator = ConditionalDecoder(
        in_channels=320, out_channels=80, causal=True, dropout=0.0, act_fn="gelu", meanflow=meanflow, **est
    )
    decoder = CausalConditionalCFM(spk_emb_dim=80, cfm_params=CFM_PARAMS, estimator=estimator)
    flow = CausalMaskedDiffWithXvec(input_size=d, vocab_size=vocab, encoder=encoder, decoder=decoder)
    return flow.eval()


def check_layout(flow, size: str, meanflow: bool = False) -> None:
    """The official module must have exactly nutq's keys/shapes (else randomize_module diverges)."""
    from dataclasses import replace

    from nutq.models.s3gen.flow import FLOW_FULL, FLOW_TINY, Flow

    cfg = FLOW_FULL if size == "full" else FLOW_TINY
    if meanflow:
        cfg = replace(cfg, estimator=replace(cfg.estimator, meanflow=True))
    with torch.device("meta"):
        ours = Flow(cfg)
    a = [(k, tuple(v.shape)) for k, v in flow.state_dict().items()]
    b = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
    if a != b:
        diff = sorted(set(a) ^ set(b))[:10]
        raise SystemExit(f"official and nutq flow layouts differ (first: {diff})")


@contextmanager
def fixed_noise_and_record(flow, noise: torch.Tensor, record: dict):
    """Patch randn_like to our noise; record the decoder's inputs; fix the finalize=False mask."""
    orig_forward = flow.decoder.forward

    def fake_randn_like(x, *a, **k):
        return noise[..., : x.shape[-1]].expand(x.shape[0], -1, -1).to(x).clone()

    def forward(mu, mask, *args, **kw):
        mask = mask[..., : mu.shape[-1]]
        record.update(mu=mu.clone(), mask=mask.clone(), spks=kw["spks"].clone(), cond=kw["cond"].clone())
        return orig_forward(mu, mask, *args, **kw)

    with (
        mock.patch.object(torch, "randn_like", fake_randn_like),
        mock.patch.object(flow.decoder, "forward", forward),
    ):
        yield


def estimator_inputs(g: torch.Generator, t: torch.Tensor, n: int = 24) -> dict:
    """Inputs of one estimator call at two flow times `t`, the second row padded (17 of n frames valid)."""
    return {
        "x": torch.randn(2, 80, n, generator=g),
        "mask": (torch.arange(n) < torch.tensor([[n], [17]])).float().unsqueeze(1),
        "mu": torch.randn(2, 80, n, generator=g),
        "t": t,
        "spks": torch.randn(2, 80, generator=g),
        "cond": torch.randn(2, 80, n, generator=g),
    }


def run_flow(flow, noise, *, finalize, token, token_len, prompt_token, prompt_feat, embedding):
    rec: dict = {}
    with fixed_noise_and_record(flow, noise, rec):
        mel, _ = flow.inference(
            token=token, token_len=token_len, prompt_token=prompt_token,
            prompt_token_len=torch.tensor([prompt_token.shape[1]]), prompt_feat=prompt_feat,
            prompt_feat_len=None, embedding=embedding, finalize=finalize,
        )
    return mel, rec


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.manual_seed(0)
    flow = build_official(args.size)
    check_layout(flow, args.size)
    randomize_module(flow, args.seed)
    full = args.size == "full"
    d = flow.encoder.output_size()
    vocab = flow.vocab_size
    n_prompt, n_new = (50, 40) if full else (10, 15)

    g = torch.Generator().manual_seed(args.seed)
    prompt_token = torch.randint(0, vocab, (1, n_prompt), generator=g)
    token = torch.randint(0, vocab, (2, n_new), generator=g)
    token_len = torch.tensor([n_new, n_new - 4])
    prompt_feat = torch.randn(1, 2 * n_prompt, 80, generator=g) - 4.0  # log-mel-like offset
    embedding = torch.randn(1, 192, generator=g)
    noise = torch.randn(2, 80, 2 * (n_prompt + n_new), generator=g)

    t: dict[str, torch.Tensor] = {
        "in.prompt_token": prompt_token, "in.token": token, "in.token_len": token_len,
        "in.prompt_feat": prompt_feat, "in.embedding": embedding, "in.noise": noise,
    }
    common = dict(prompt_token=prompt_token, prompt_feat=prompt_feat, embedding=embedding)
    for name, finalize in (("final", True), ("stream", False)):
        mel, rec = run_flow(flow, noise[:1], finalize=finalize, token=token[:1],
                            token_len=token_len[:1], **common)
        t[f"out.mel_{name}"], t[f"out.mu_{name}"] = mel, rec["mu"]
        if finalize:
            t.update({"out.mask_final": rec["mask"], "out.spks": rec["spks"], "out.cond": rec["cond"]})
    # Batch of 2 new-token rows (second one padded) sharing one voice, finalize=True.
    mel, _ = run_flow(flow, noise, finalize=True, token=token, token_len=token_len, **common)
    t["out.mel_batch"] = mel

    with torch.inference_mode():
        # Encoder alone on a padded batch (last-layer output after after_norm, and its mask).
        enc_len = torch.tensor([12, 9])
        enc_x = torch.randn(2, 12, d, generator=g)
        h, h_mask = flow.encoder(enc_x, enc_len)
        t.update({"in.enc_x": enc_x, "in.enc_len": enc_len, "out.enc_h": h, "out.enc_mask": h_mask})

        est_in = estimator_inputs(g, torch.tensor([0.3, 0.85]))
        t.update({f"in.est_{k}": v for k, v in est_in.items()})
        t["out.est"] = flow.decoder.estimator(**est_in)

    save(args.out, t, {"size": args.size, "seed": args.seed, "n_prompt": n_prompt, "n_new": n_new,
                       "n_timesteps": 10, "cfg_rate": 0.7})


if __name__ == "__main__":
    main()

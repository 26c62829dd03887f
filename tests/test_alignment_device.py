"""The batched on-device guard decides exactly as the host AlignmentGuard, with no host reads.

Sessions with different text lengths, text spans and start times share one DeviceGuard; each also
runs through its own host guard on the same attention (full probe rows, so the device side goes
through `text_span_rows`). Per frame the text position and the suppress / force decisions must be
equal, and the counts at each session's last frame. Inputs: the branch-crafted and recorded cases
of the official parity fixture, and random sequences made to wander, stall, jump and repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from conftest import load_golden
from nutq.engine.alignment import ARABIC, COUNT_KEYS, OFFICIAL, AlignmentGuard, GuardConfig, GuardDecision
from nutq.engine.alignment_device import DeviceGuard, text_span_rows

BOS = 6561
H = 3
# Everything small so every branch fires on short random sequences; hold with short patience.
SENSITIVE = GuardConfig(max_jump_back=2, max_jump_forward=3, complete_margin=2, long_tail_frames=1.5,
                        alignment_repetition=1.0, token_repetition=4, min_text_for_eos_suppression=4,
                        false_start=0.2, start_attention=0.3, false_start_hold=True, false_start_patience=6)
CONFIGS = {"official": OFFICIAL, "arabic": ARABIC, "sensitive": SENSITIVE}


@dataclass
class Session:
    span: tuple[int, int]  # text span in the prefill
    prefill: torch.Tensor  # (H, L, L), L = span end + 2 (two BOS queries)
    steps: list[torch.Tensor]  # frame k >= 1: (H, L + k)
    tokens: list[int]  # fed token per frame, BOS first
    offset: int = 0  # global step at which the session's prefill runs

    @property
    def frames(self) -> int:
        return len(self.tokens)


def golden_sessions() -> list[Session]:
    g, meta = load_golden("alignment")
    out = []
    for k, case in enumerate(meta["cases"]):
        prefill, steps = g[f"in.{case}.prefill"], g[f"in.{case}.steps"]
        L = prefill.shape[-1]
        n = len(g[f"in.{case}.tokens"])
        out.append(Session(tuple(g[f"in.{case}.span"].tolist()), prefill,
                           [steps[f - 1, :, :L + f] for f in range(1, n)], g[f"in.{case}.tokens"].tolist(), k % 3))
    return out


def random_session(gen: torch.Generator, S: int, n: int, offset: int, cond: int) -> Session:
    """Attention peaking along a noisy path through the text; after it the peak lingers on the
    last tokens or returns to early text; heads differ; tokens from a tiny vocabulary repeat."""
    i, j = cond, cond + S
    L = j + 2
    speed = 0.3 + torch.rand(1, generator=gen).item()
    path = (torch.arange(n) * speed + torch.randn(n, generator=gen) * 1.5).round().long()
    if torch.rand(1, generator=gen).item() < 0.5:  # return to early text near the end
        q = n // 4
        path[n - q:] = torch.randint(0, max(1, S // 3), (q,), generator=gen)
    path = path.clamp(0, S - 1)
    mass = 0.2 + 0.8 * torch.rand(n, generator=gen)  # share of attention on the text span
    logits = torch.randn(H, n, S, generator=gen) * 1.5
    logits[:, torch.arange(n), path] += 4.0 * torch.rand(H, n, generator=gen)
    text_rows = logits.softmax(-1) * mass[None, :, None]  # (H, n, S)
    prefill = torch.rand(H, L, L, generator=gen) * 0.01
    prefill[:, j:, i:j] = text_rows[:, :1]  # both BOS queries share frame 0's row
    steps = []
    for k in range(1, n):
        row = torch.rand(H, L + k, generator=gen) * 0.01
        row[:, i:j] = text_rows[:, k]
        steps.append(row)
    tokens = [BOS] + torch.randint(0, 5, (n - 1,), generator=gen).tolist()
    return Session((i, j), prefill, steps, tokens, offset)


def random_sessions(seed: int) -> list[Session]:
    gen = torch.Generator().manual_seed(seed)
    lens = [2, 3, 5, 6, 9, 17, 33]
    return [random_session(gen, S, 45 + 5 * k, offset=k % 4, cond=1 + 2 * k) for k, S in enumerate(lens)]


def host_run(s: Session, cfg: GuardConfig) -> tuple[list[GuardDecision], dict]:
    guard = AlignmentGuard(s.span, cfg)
    decisions = [guard.observe(s.prefill, s.tokens[0])]
    decisions += [guard.observe(s.steps[k - 1][:, None], s.tokens[k]) for k in range(1, s.frames)]
    return decisions, guard.counts


def device_run(sessions: list[Session], cfg: GuardConfig, compile_observe: bool = False):
    """Drive one DeviceGuard through all sessions on a global clock: each step, running sessions
    are observed (free and finished slots get zeros), then sessions due start in their slots.
    Returns per session the (position, suppress, force) per frame and the counts at its last frame."""
    B = len(sessions)
    width = max(s.span[1] - s.span[0] for s in sessions)
    guard = DeviceGuard(B, width, cfg, max_frames=64)
    step = torch.compile(guard.observe, fullgraph=True, backend="eager") if compile_observe else guard.observe
    spans = torch.tensor([s.span for s in sessions])
    got = [[] for _ in sessions]
    counts: list[dict] = [{} for _ in sessions]
    end = max(s.offset + s.frames for s in sessions)
    for t in range(end):
        running = [b for b, s in enumerate(sessions) if s.offset < t < s.offset + s.frames]
        if running:
            kv = max(s.steps[t - s.offset - 1].shape[-1] for s in (sessions[b] for b in running))
            probe = torch.zeros(B, H, 1, kv)
            fed = torch.zeros(B, dtype=torch.long)
            for b in running:
                s, k = sessions[b], t - sessions[b].offset
                probe[b, :, 0, :s.steps[k - 1].shape[-1]] = s.steps[k - 1]
                fed[b] = s.tokens[k]
            pos, sup, force = step(text_span_rows(probe, spans, width)[:, :, 0], fed)
            for b in running:
                got[b].append((int(pos[b]), bool(sup[b]), bool(force[b])))
                if t - sessions[b].offset == sessions[b].frames - 1:
                    counts[b] = {k: int(v[b]) for k, v in guard.counts().items()}
        due = [b for b, s in enumerate(sessions) if s.offset == t]
        if due:
            rows = [sessions[b].prefill[:, sessions[b].span[1]:, sessions[b].span[0]:sessions[b].span[1]] for b in due]
            pos, sup, force = guard.start(rows, BOS, slots=due)
            for k, b in enumerate(due):
                got[b].append((int(pos[k]), bool(sup[k]), bool(force[k])))
    for b, s in enumerate(sessions):  # the history holds the same positions (up to max_frames)
        n = min(s.frames, 64)
        assert guard.positions()[b, :n].tolist() == [p for p, _, _ in got[b][:n]]
    return got, counts


def assert_same(sessions: list[Session], cfg: GuardConfig, compile_observe: bool = False) -> dict:
    got, counts = device_run(sessions, cfg, compile_observe)
    total = dict.fromkeys(COUNT_KEYS, 0)
    for b, s in enumerate(sessions):
        decisions, host_counts = host_run(s, cfg)
        want = [(d.text_position, d.suppress_eos, d.force_eos) for d in decisions]
        bad = [k for k, (x, y) in enumerate(zip(got[b], want)) if x != y]
        assert not bad, (f"session {b} (S={s.span[1] - s.span[0]}) frame {bad[0]}: (position, suppress, force) "
                         f"device {got[b][bad[0]]} host {want[bad[0]]}")
        assert counts[b] == host_counts, f"session {b}: counts {counts[b]} vs host {host_counts}"
        for k in total:
            total[k] += host_counts[k]
    return total


@pytest.mark.parametrize("profile", ["official", "arabic"])
def test_golden_cases_match_host(profile):
    assert_same(golden_sessions(), CONFIGS[profile])


@pytest.mark.parametrize("profile", list(CONFIGS))
def test_random_sessions_match_host(profile):
    totals = dict.fromkeys(COUNT_KEYS, 0)
    for seed in range(3):
        for k, v in assert_same(random_sessions(seed), CONFIGS[profile]).items():
            totals[k] += v
    # the comparison is only as good as what it exercised
    must = ["eos_suppressed", "forced_eos", "forced_token_repetition", "discontinuity", "false_start"]
    if profile == "sensitive":
        must += ["forced_long_tail", "forced_alignment_repetition"]
    assert all(totals[k] > 0 for k in must), f"random sequences missed a branch: {totals}"


def test_observe_and_apply_do_not_read_tensors_on_the_host():
    """On the meta device tensors have no data: any .item(), .cpu(), .tolist() or `if tensor`
    inside start/observe/apply raises."""
    B, W, V = 3, 9, 12
    guard = DeviceGuard(B, W, ARABIC, max_frames=8, device="meta")
    pos, sup, force = guard.start([torch.empty(H, 2, s, device="meta") for s in (4, 9, 6)], BOS)
    for _ in range(3):
        fed = torch.empty(B, dtype=torch.long, device="meta")
        pos, sup, force = guard.observe(torch.empty(B, H, W, device="meta"), fed)
        logits = DeviceGuard.apply(torch.empty(B, V, device="meta"), sup, force, eos=V - 1)
    assert pos.shape == sup.shape == force.shape == (B,) and logits.shape == (B, V)


def test_observe_compiles_to_one_graph_and_matches_host():
    """fullgraph=True fails on a graph break (e.g. a Python branch on a tensor value, which
    would stall a captured step); the compiled step must still decide as the host guard."""
    torch._dynamo.reset()
    assert_same(random_sessions(11), SENSITIVE, compile_observe=True)

"""The teacher, the student at init, the targets and the loss mask of the meanflow distillation."""

from __future__ import annotations

import pytest
import torch

from mf_fixtures import prepared, teacher, train_set  # noqa: F401  (fixtures)
from nutq.models.s3gen.cfm import EulerCFG, cosine_time_grid
from nutq.train.meanflow.inputs import batch_noise, collate, example_noise, flow_inputs
from nutq.train.meanflow.objective import PairConfig, PairSampler, masked_mse
from nutq.train.meanflow.student import init_student
from nutq.train.meanflow.teacher import guided_euler, guided_velocity, teacher_path


def _batch(train_set, idx):
    return collate([train_set[i] for i in idx], idx)


def _one(teacher, train_set):
    """(flow inputs, noise, estimator) of example 0 alone."""
    b = _batch(train_set, [0])
    return flow_inputs(teacher.flow, b), batch_noise(b, 0, [0], "cpu"), teacher.flow.decoder.estimator


def test_teacher_path_ends_where_euler_cfg_ends(teacher, train_set):
    """One example: the last knot of the path is bit for bit what the official solver returns."""
    fi, z, est = _one(teacher, train_set)
    with torch.inference_mode():
        want = EulerCFG()(est, z, fi.mu, fi.mask, fi.spks, fi.cond)
    assert torch.equal(teacher_path(est, z, fi).states[-1], want)


def test_batched_inputs_equal_inference_per_example(teacher, train_set):
    """Padded rows of different lengths give each example's `Flow.inference` mel (same noise)."""
    idx = [0, 1, 2]
    b = _batch(train_set, idx)
    assert len(set(b.token_len.tolist())) > 1  # really padded
    fi = flow_inputs(teacher.flow, b)
    z = batch_noise(b, 7, [0, 0, 0], "cpu")
    out = teacher_path(teacher.flow.decoder.estimator, z, fi).states[-1]
    for row, i in enumerate(idx):
        e = train_set[i]
        n = int(b.mel_len[row])
        want = teacher.flow.inference(e.speech_tokens[None], None, e.flow_prompt_tokens[None], None,
                                      e.flow_prompt_mel[None], e.xvector[None], finalize=True,
                                      noise=example_noise(7, i, 0, n)[None])
        p = int(b.prompt_frames[row])
        assert want.shape[-1] == n - p
        torch.testing.assert_close(out[row, :, p:n], want[0], atol=1e-4, rtol=0)
        gen = fi.generated[row, 0]
        assert gen[:p].sum() == 0 and gen[p:n].all() and gen[n:].sum() == 0


def test_student_at_init_equals_teacher_at_t(teacher, train_set):
    b = _batch(train_set, [0, 3])
    fi = flow_inputs(teacher.flow, b)
    est = teacher.flow.decoder.estimator
    student = init_student(est)
    x = torch.randn_like(fi.mu)
    t = torch.tensor([0.1, 0.7])
    with torch.no_grad():
        v = est(x, fi.mask, fi.mu, t, fi.spks, fi.cond)
        for r in (torch.tensor([0.5, 1.0]), torch.tensor([0.1, 0.7]), torch.rand(2)):
            u = student(x, fi.mask, fi.mu, t, fi.spks, fi.cond, r=r)
            torch.testing.assert_close(u, v, atol=1e-6, rtol=0)
    assert student.training and all(p.requires_grad for p in student.parameters())


def test_targets_on_the_teacher_path(teacher, train_set):
    b = _batch(train_set, [1, 2])
    fi = flow_inputs(teacher.flow, b)
    z = batch_noise(b, 0, [0, 0], "cpu")
    est = teacher.flow.decoder.estimator
    path = teacher_path(est, z, fi)
    rows = torch.tensor([0, 1])
    # [0, 1]: the chord from the noise to the 10-step output.
    z0, u = path.targets(torch.zeros(2), torch.ones(2), rows)
    assert torch.equal(z0, z)
    torch.testing.assert_close(z0 + u, path.states[-1], atol=1e-5, rtol=0)
    # r = t at a knot: the guided velocity there.
    g = cosine_time_grid(10)
    for k in (0, 4, 9):
        zk, u = path.targets(g[k].expand(2), g[k].expand(2), rows)
        assert torch.equal(zk, path.states[k])
        with torch.no_grad():
            v = guided_velocity(est, zk, g[k], fi)
        torch.testing.assert_close(u, v, atol=2e-4, rtol=1e-4)
    # Deployed 2-step intervals compose: [0, .5] then [.5, 1] lands on the 10-step output.
    half = torch.full((2,), 0.5)
    _, u1 = path.targets(torch.zeros(2), half, rows)
    z_half, u2 = path.targets(half, torch.ones(2), rows)
    torch.testing.assert_close(z + 0.5 * u1, z_half, atol=1e-5, rtol=0)
    torch.testing.assert_close(z_half + 0.5 * u2, path.states[-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="knots"):
        path.targets(half, half, rows)


def test_loss_sees_only_generated_frames(teacher, train_set):
    b = _batch(train_set, [0, 1])
    fi = flow_inputs(teacher.flow, b)
    target = torch.randn_like(fi.mu)
    pred = target + 0.1 * torch.randn_like(target)
    base = masked_mse(pred, target, fi.generated)
    prompt = torch.zeros_like(fi.generated, dtype=torch.bool)
    for row in range(2):
        prompt[row, :, : int(b.prompt_frames[row])] = True
    pad = fi.mask == 0
    assert pad.any()
    for region in (prompt, pad):
        bumped = pred + 100.0 * region.expand_as(pred)
        assert masked_mse(bumped, target, fi.generated) == base
    gen = fi.generated.bool().expand_as(pred)
    assert masked_mse(pred + 1.0 * gen, target, fi.generated) > base + 0.5


def test_pair_sampler_oversamples_the_deployed_intervals():
    grid = cosine_time_grid(10)
    s = PairSampler(PairConfig(steps=(2, 1), p_deployed=0.5, p_equal=0.1), grid, seed=1)
    t, r, kind = s(20000)
    assert (r >= t).all() and t.min() >= 0 and r.max() <= 1
    dep = kind == 0
    assert abs(dep.float().mean() - 0.5) < 0.02 and abs((kind == 1).float().mean() - 0.1) < 0.01
    pairs = torch.stack([t[dep], r[dep]], 1)
    share = {iv: (pairs == torch.tensor(iv)).all(1).float().mean().item() for iv in ((0, .5), (.5, 1), (0, 1))}
    assert abs(share[(0, 1)] - 0.5) < 0.03 and abs(share[(0, .5)] - 0.25) < 0.03 and abs(share[(.5, 1)] - 0.25) < 0.03
    eq = kind == 1
    assert torch.equal(t[eq], r[eq]) and torch.isin(t[eq], grid).all()
    rand = kind == 2
    assert (r[rand] > t[rand]).all()
    # Deterministic and resumable from its state.
    s2 = PairSampler(PairConfig(), grid, seed=1)
    st = s2.state()
    a = s2(5)
    s2.set_state(st)
    assert all(torch.equal(x, y) for x, y in zip(a, s2(5)))


def test_example_noise_depends_on_seed_index_and_draw():
    a = example_noise(0, 3, 0, 10)
    assert torch.equal(a, example_noise(0, 3, 0, 10))
    for other in (example_noise(1, 3, 0, 10), example_noise(0, 4, 0, 10), example_noise(0, 3, 1, 10)):
        assert not torch.equal(a, other)


def test_guided_euler_cfg0_is_the_conditional_field(teacher, train_set):
    fi, z, est = _one(teacher, train_set)
    with torch.inference_mode():
        want = EulerCFG(3, 0.0)(est, z, fi.mu, fi.mask, fi.spks, fi.cond)
    torch.testing.assert_close(guided_euler(est, z, fi, cosine_time_grid(3), 0.0)[-1], want, atol=1e-6, rtol=0)

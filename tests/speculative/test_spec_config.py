"""SpecConfig validation and the adaptive choice of k."""

from __future__ import annotations

import pytest

from nutq.engine.speculative import AdaptiveK, SpecConfig, expected_tokens


def test_expected_tokens():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_k_follows_acceptance():
    spec = SpecConfig(k=4, draft_cost=0.1, verify_cost_per_token=0.05)
    high, low = AdaptiveK(spec), AdaptiveK(spec)
    for _ in range(20):
        high.update(4, 4)
        low.update(4, 0)
    assert high.k == spec.k_max and low.k == 1
    fixed = AdaptiveK(SpecConfig(k=3, adaptive=False))
    fixed.update(4, 0)
    assert fixed.k == 3


@pytest.mark.parametrize("kw", [{"k": 0}, {"k": 9}, {"tolerance": -0.1}, {"tolerance": 1.0}, {"draft": "other"},
                                {"draft_cost": -1.0}])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        SpecConfig(**kw)

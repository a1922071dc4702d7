"""The one interval every precision on a page rests on."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pruning_core.audit.estimates import Estimate, precision_interval


def test_jeffreys_interval_known_values():
    # scipy's beta quantiles for Beta(8.5, 2.5) at 5 % and 95 %, the Jeffreys interval of 8 of 10
    lo, hi = precision_interval(8, 10, level=0.9)
    assert lo == pytest.approx(0.5475, abs=1e-3) and hi == pytest.approx(0.9398, abs=1e-3)
    assert precision_interval(0, 20)[0] == 0.0 and precision_interval(20, 20)[1] == 1.0
    assert precision_interval(0, 0) == (0.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.floats(0.0, 1.0))
def test_interval_contains_the_observed_rate_and_narrows_with_n(n, rate):
    hits = int(round(rate * n))
    lo, hi = precision_interval(hits, n)
    assert 0.0 <= lo <= hits / n <= hi <= 1.0
    lo4, hi4 = precision_interval(4 * hits, 4 * n)
    assert hi4 - lo4 <= hi - lo + 1e-12


def test_coverage_is_near_nominal():
    rng = np.random.default_rng(0)
    for p in (0.1, 0.5, 0.85):
        hits = rng.binomial(50, p, size=2000)
        covered = np.mean([lo <= p <= hi for lo, hi in (precision_interval(int(h), 50) for h in hits)])
        assert 0.85 <= covered <= 0.96, (p, covered)


def test_estimate_from_verdicts_scales_the_flagged_count():
    est = Estimate.from_verdicts(400, hits=30, checked=40, source="reviewer verdicts")
    lo, hi = est.count_interval
    assert lo < est.count < hi and est.count == pytest.approx(400 * 30.5 / 41)
    assert est.summary()["checked"] == 40
    with pytest.raises(ValueError):
        precision_interval(5, 3)


def test_model_estimates_span_and_uncalibrated_counts():
    from pruning_core.audit.estimates import exact, from_probabilities, span, uncalibrated

    q = np.array([0.9, 0.8, 0.1, 0.0, 1.0])
    est = from_probabilities(q, source="model")
    lo, hi = est.count_interval
    assert est.count == pytest.approx(2.8) and lo < 2.8 < hi and 0 <= lo and hi <= 5
    # Poisson-binomial sd = sqrt(sum q(1-q)) = sqrt(0.34): the 90 % half-width is 1.645 of it
    assert hi - est.count == pytest.approx(1.6449 * np.sqrt(0.34), abs=1e-3)
    wider = span([est, from_probabilities(np.array([0.2, 0.2, 0.1, 0.0, 0.5]), source="other")], source="both")
    assert wider.low < est.low and wider.high == est.high and wider.source == "both"
    raw = uncalibrated(7, "no model").summary()
    assert raw["estimated"] is None and (raw["precision_low"], raw["precision_high"]) == (0.0, 1.0)
    assert exact(3, "loader").summary()["estimated"] == 3.0

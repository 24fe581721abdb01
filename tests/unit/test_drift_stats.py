"""The category-mix test is a calibrated two-sample test (Evidently's `chisquare` is not)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_two_sample_chi2_is_calibrated_where_goodness_of_fit_is_not():
    from evidently import ColumnType
    from evidently.legacy.calculations.stattests import get_stattest

    from vsearch.monitoring.drift import register_two_sample_chi2

    register_two_sample_chi2()
    register_two_sample_chi2()  # registering again replaces the entry (each detect_drift call registers)
    rng = np.random.default_rng(0)
    probs = np.array([0.25, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.05])
    cats = np.array(list("abcdefgh"))
    ours, gof = [], []
    for _ in range(300):
        ref, cur = pd.Series(rng.choice(cats, 300, p=probs)), pd.Series(rng.choice(cats, 300, p=probs))
        test = get_stattest(ref, cur, ColumnType.Categorical, "chi2_contingency")
        ours.append(test(ref, cur, ColumnType.Categorical, 0.05).drifted)
        gof.append(get_stattest(ref, cur, ColumnType.Categorical, "chisquare")(ref, cur, ColumnType.Categorical, 0.05).drifted)
    assert 0.02 <= np.mean(ours) <= 0.09  # nominal 5%
    assert np.mean(gof) > 0.12  # the goodness-of-fit test treats the reference as exact
    # And it has power: half the categories gone.
    shifted = pd.Series(rng.choice(cats[:4], 300, p=probs[:4] / probs[:4].sum()))
    ref = pd.Series(rng.choice(cats, 300, p=probs))
    test = get_stattest(ref, shifted, ColumnType.Categorical, "chi2_contingency")
    result = test(ref, shifted, ColumnType.Categorical, 0.001)
    assert result.drifted and result.drift_score < 1e-10

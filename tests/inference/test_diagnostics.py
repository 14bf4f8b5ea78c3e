"""The diagnostics report on synthetic draws with known defects."""

import warnings

import arviz_stats
import numpy as np
import pytest
from arviz_base import from_dict

from gaussmix.inference.diagnostics import DiagnosticsReport, SamplingWarning, diagnose

CHAINS, DRAWS = 4, 1000


def healthy(seed=0, **extra_groups):
    """Independent draws: every check passes."""
    rng = np.random.default_rng(seed)
    energy = rng.normal(size=(CHAINS, DRAWS))
    groups = {
        "posterior": {
            "mu": rng.normal(size=(CHAINS, DRAWS)),
            "beta": rng.normal(size=(CHAINS, DRAWS, 2)),
        },
        "sample_stats": {
            "diverging": np.zeros((CHAINS, DRAWS), bool),
            "energy": energy,
            "reached_max_tree_depth": np.zeros((CHAINS, DRAWS), bool),
        },
        "log_likelihood": {"y": -1.0 + 0.1 * rng.normal(size=(CHAINS, DRAWS, 20))},
    }
    for group, values in extra_groups.items():
        groups.setdefault(group, {}).update(values)
    return groups


def split_r_hat(draws):
    """Classic split R-hat (Gelman et al., BDA3 eq. 11.4) as an independent reference."""
    half = draws.shape[1] // 2
    split = np.concatenate([draws[:, :half], draws[:, half : 2 * half]])
    n = split.shape[1]
    between = n * split.mean(axis=1).var(ddof=1)
    within = split.var(axis=1, ddof=1).mean()
    return np.sqrt(((n - 1) / n * within + between / n) / within)


def test_healthy_draws_pass_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        report = diagnose(from_dict(healthy()))
    assert isinstance(report, DiagnosticsReport)
    assert report.ok and report.problems == ()
    assert sorted(report.table.index) == ["beta[0]", "beta[1]", "mu"]
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd"} <= set(
        report.table.columns
    )
    assert report.divergences == 0 and report.bfmi.shape == (CHAINS,)
    assert report.pareto_k["y"].shape == (20,)
    assert "All diagnostics pass" in str(report)


def test_r_hat_agrees_with_the_classic_formula_on_iid_draws():
    groups = healthy(1)
    report = diagnose(from_dict(groups), warn=False)
    # Rank-normalized R-hat equals the classic one up to Monte Carlo noise on normal draws.
    np.testing.assert_allclose(
        report.table.loc["mu", "r_hat"], split_r_hat(groups["posterior"]["mu"]), atol=5e-3
    )


def test_table_is_arvizs_own_ess_r_hat_and_mcse():
    """Every convergence column equals ArviZ's own function (``arviz_stats.ess``, ``rhat``,
    ``mcse``) on the same DataTree: diagnose computes none of them itself, so only
    float64 rounding could separate them (measured 0; 1e-12 relative allows a different
    summation order). The draws are AR(1) chains (phi = 0.9, ESS about S (1 - phi) /
    (1 + phi), a twentieth of the draws) with one chain shifted, so that ESS, R-hat and
    the MCSEs are far from their iid values and a wrong column cannot agree by chance."""
    rng = np.random.default_rng(9)
    noise = rng.normal(size=(CHAINS, DRAWS, 3))
    draws = np.empty_like(noise)
    draws[:, 0] = noise[:, 0]
    for index in range(1, DRAWS):
        draws[:, index] = 0.9 * draws[:, index - 1] + np.sqrt(1 - 0.81) * noise[:, index]
    draws[1] += 0.3
    groups = healthy(9)
    groups["posterior"] = {"mu": draws[..., 0], "beta": draws[..., 1:]}
    tree = from_dict(groups)
    table = diagnose(tree, warn=False).table
    columns = {
        "ess_bulk": arviz_stats.ess(tree, method="bulk"),
        "ess_tail": arviz_stats.ess(tree, method="tail"),
        "r_hat": arviz_stats.rhat(tree, method="rank"),
        "mcse_mean": arviz_stats.mcse(tree, method="mean"),
        "mcse_sd": arviz_stats.mcse(tree, method="sd"),
    }
    parameters = {"mu": ("mu", ()), "beta[0]": ("beta", (0,)), "beta[1]": ("beta", (1,))}
    for label, (name, index) in parameters.items():
        for column, reference in columns.items():
            np.testing.assert_allclose(
                float(table.loc[label, column]), float(reference[name].values[index]),
                rtol=1e-12, err_msg=f"{label} {column}",
            )  # fmt: skip
        assert table.loc[label, "ess_bulk"] < CHAINS * DRAWS / 5
    np.testing.assert_allclose(table.loc["mu", "mean"], draws[..., 0].mean(), rtol=1e-12)
    np.testing.assert_allclose(table.loc["mu", "sd"], draws[..., 0].std(ddof=1), rtol=1e-12)


def test_disagreeing_chains_warn_and_are_flagged_multimodal():
    groups = healthy(2)
    groups["posterior"]["mu"][1] += 10.0  # chain 1 sits in another mode
    with pytest.warns(SamplingWarning) as record:
        report = diagnose(from_dict(groups))
    messages = " ".join(str(w.message) for w in record)
    assert "R-hat > 1.01" in messages and "different modes" in messages
    assert report.multimodal == ("mu",)
    assert split_r_hat(groups["posterior"]["mu"]) > 1.01
    assert report.table.loc["mu", "r_hat"] > 1.01


def test_slowly_mixing_chains_are_not_called_multimodal():
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(size=(CHAINS, DRAWS)), axis=1) * 0.05  # autocorrelated
    groups = healthy(3)
    groups["posterior"]["mu"] = walk
    with pytest.warns(SamplingWarning) as record:
        report = diagnose(from_dict(groups))
    assert any("ESS < 400" in str(w.message) for w in record)
    assert report.table.loc["mu", "ess_bulk"] < 400
    assert report.multimodal == ()


def test_divergences_warn_with_their_count():
    groups = healthy(4)
    groups["sample_stats"]["diverging"][0, :7] = True
    with pytest.warns(SamplingWarning, match="7 of 4000 transitions diverged"):
        report = diagnose(from_dict(groups))
    assert report.divergences == 7 and not report.ok


def test_low_bfmi_warns():
    groups = healthy(5)
    # An energy that wanders slowly: momentum resampling barely changes it.
    rng = np.random.default_rng(5)
    groups["sample_stats"]["energy"] = np.cumsum(rng.normal(size=(CHAINS, DRAWS)), axis=1)
    with pytest.warns(SamplingWarning, match="BFMI"):
        report = diagnose(from_dict(groups))
    assert np.all(report.bfmi < 0.3)


def test_high_pareto_k_warns():
    groups = healthy(6)
    rng = np.random.default_rng(6)
    # Importance ratios 1/p(y_i | theta) with a Pareto tail of shape k = 1 for point 0.
    groups["log_likelihood"]["y"][:, :, 0] = -rng.exponential(1.0, size=(CHAINS, DRAWS))
    with pytest.warns(SamplingWarning, match="Pareto k > 0.7 for 1 of 20"):
        report = diagnose(from_dict(groups))
    assert report.pareto_k["y"][0] > 0.7
    assert np.all(report.pareto_k["y"][1:] <= 0.7)


def test_label_switching_of_a_relabeled_mixture_warns():
    tree = from_dict(healthy(7))
    tree["posterior"].attrs["label_switching"] = 0.3
    with pytest.warns(SamplingWarning, match="swap labels"):
        report = diagnose(tree)
    text = str(report)
    assert text.index("WARNING") < text.index("Unreliable estimates") < text.index("\nmu ")


def test_thresholds_are_arguments():
    groups = healthy(8)
    report = diagnose(from_dict(groups), ess_threshold=10 * CHAINS * DRAWS, warn=False)
    assert any("ESS <" in problem for problem in report.problems)


def test_bad_input():
    with pytest.raises(ValueError, match="posterior"):
        diagnose(from_dict({"sample_stats": {"diverging": np.zeros((2, 5), bool)}}))
    with pytest.raises(ValueError, match=r"Unknown var_names \['sigma'\]"):
        diagnose(from_dict(healthy()), var_names=["sigma"])

"""LOO comparison and the point-versus-posterior table."""

import warnings

import arviz_stats
import numpy as np
import pandas as pd
import pytest
from arviz_base import from_dict
from scipy import optimize

import gaussmix
from gaussmix.comparison import compare, point_versus_posterior


def fixed_tree(pointwise, rng, chains=2, draws=300):
    """Draws whose log-likelihood barely varies: PSIS-LOO's elpd is sum(pointwise)."""
    log_likelihood = pointwise + 1e-8 * rng.normal(size=(chains, draws, pointwise.size))
    return from_dict(
        {
            "posterior": {"mu": rng.normal(size=(chains, draws))},
            "log_likelihood": {"y": log_likelihood},
        }
    )


def test_compare_ranks_by_elpd_and_matches_the_exact_value():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(-1.0, 0.2, 40), rng.normal(-1.5, 0.2, 40)
    table = compare({"bad": fixed_tree(bad, rng), "good": fixed_tree(good, rng)})
    assert table.index.tolist() == ["good", "bad"]
    np.testing.assert_allclose(table.loc["good", "elpd"], good.sum(), rtol=1e-8)
    np.testing.assert_allclose(table.loc["bad", "elpd_diff"], bad.sum() - good.sum(), rtol=1e-8)
    np.testing.assert_allclose(table.loc["good", "p"], 0.0, atol=1e-6)
    assert {"rank", "elpd", "p", "elpd_diff", "weight", "se", "dse"} <= set(table.columns)
    # The package attribute runs the same comparison, imported or not.
    again = gaussmix.compare({"bad": fixed_tree(bad, rng), "good": fixed_tree(good, rng)})
    assert again.index.tolist() == ["good", "bad"]
    assert gaussmix.point_versus_posterior is point_versus_posterior


def complementary_models(rng, n=40):
    """Three models' pointwise log densities: "a" fits the first half of the points best,
    "b" the second half, "c" none (stacking weights inside the simplex for a and b)."""
    half = np.arange(n) < n // 2
    return {
        "a": np.where(half, rng.normal(-1.0, 0.2, n), rng.normal(-1.6, 0.2, n)),
        "b": np.where(half, rng.normal(-1.5, 0.2, n), rng.normal(-1.1, 0.2, n)),
        "c": rng.normal(-1.7, 0.3, n),
    }


@pytest.mark.parametrize("method", ["stacking", "pseudo-BMA", "BB-pseudo-BMA"])
def test_whole_table_is_arvizs_compare_and_its_closed_forms(method):
    """Every column (rank, elpd, se, p, elpd_diff, dse, weight, diagnostics) is ArviZ's own
    ``compare`` of the same DataTrees, bit for bit (the same arithmetic on the same
    inputs); se, dse, elpd_diff and the weights are then recomputed by hand from ArviZ's
    pointwise PSIS-LOO values."""
    rng = np.random.default_rng(8)
    pointwise = complementary_models(rng)
    trees = {name: fixed_tree(values, rng) for name, values in pointwise.items()}
    table = compare(trees, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own small-N notes on the differences
        reference = arviz_stats.compare(trees, method=method, round_to="none")
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    names = list(pointwise)
    elpd_i = np.stack(
        [arviz_stats.loo(trees[name], pointwise=True).elpd_i.values for name in names], axis=1
    )  # (N, 3)
    n = elpd_i.shape[0]
    # PSIS-LOO of draws whose log-likelihood varies by 1e-8: the log of an average of
    # exp(pointwise + 1e-8 z) moves each point by about 1e-8 / sqrt(600 draws) (measured
    # 1.2e-9); 1e-8 bounds it.
    np.testing.assert_allclose(elpd_i, np.stack(list(pointwise.values()), axis=1), atol=1e-8)
    # Closed forms of ArviZ's definitions (float64 sums of 40 terms: rounding about 1e-15;
    # measured 0: ArviZ computes the same sums): elpd = sum_i elpd_i; se =
    # sqrt(N var_i elpd_i) with ddof=1 (loo's convention); elpd_diff and dse =
    # sqrt(N var_i(elpd_i,best - elpd_i,m)) with ddof=0 (compare's convention).
    best = names.index(table.index[0])
    for column, name in enumerate(names):
        row = table.loc[name]
        difference = elpd_i[:, best] - elpd_i[:, column]
        np.testing.assert_allclose(row["elpd"], elpd_i[:, column].sum(), rtol=1e-13)
        if method != "BB-pseudo-BMA":  # its se is the bootstrap spread of the weights' z
            np.testing.assert_allclose(
                row["se"], np.sqrt(n * np.var(elpd_i[:, column], ddof=1)), rtol=1e-13
            )
        np.testing.assert_allclose(row["elpd_diff"], -difference.sum(), atol=1e-12)
        np.testing.assert_allclose(row["dse"], np.sqrt(n * np.var(difference)), atol=1e-12)
    weights = table.loc[names, "weight"].to_numpy()
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    totals = elpd_i.sum(axis=0)
    if method == "pseudo-BMA":
        # w_m proportional to exp(elpd_m): exact up to rounding (measured 9e-16)
        expected = np.exp(totals - totals.max())
        np.testing.assert_allclose(weights, expected / expected.sum(), rtol=1e-12, atol=1e-15)
    elif method == "stacking":
        # Stacking maximizes sum_i log sum_m w_m exp(elpd_i,m) on the simplex. The optimum
        # here: c gets no weight (KKT below), a and b by a bounded 1-D search to 1e-12.
        # ArviZ's SLSQP stops when the objective changes by less than its ftol = 1e-6, so
        # its objective is within 1e-6 of the optimum (measured 1.3e-12) and its weights
        # within sqrt(2e-6 / h) of it, h = sum_i (p_ia - p_ib)^2 / (p_i . w)^2 the
        # objective's curvature along the a-b edge (h = 11.1: 4.2e-4; measured 9.2e-7).
        density = np.exp(elpd_i)

        def objective(w):
            return -np.sum(np.log(density @ w))

        on_edge = optimize.minimize_scalar(
            lambda s: objective(np.array([s, 1 - s, 0.0])),
            bounds=(0.0, 1.0),
            method="bounded",
            options={"xatol": 1e-12},
        ).x
        optimum = np.array([on_edge, 1 - on_edge, 0.0])
        mixture = density @ optimum
        # KKT: adding weight to c raises the objective faster than to a or b
        gradient = -np.sum(density / mixture[:, None], axis=0)
        assert gradient[2] > gradient[0] + 1.0
        curvature = np.sum((density[:, 0] - density[:, 1]) ** 2 / mixture**2)
        assert 0 <= objective(weights) - objective(optimum) < 1e-6
        np.testing.assert_allclose(weights, optimum, atol=np.sqrt(2e-6 / curvature))
        assert weights[2] < 1e-6


def test_package_names_are_the_functions_after_the_module_is_imported():
    # Importing gaussmix.comparison binds gaussmix.comparison, never gaussmix.compare.
    import gaussmix.comparison
    from gaussmix import compare as imported

    assert imported is compare and gaussmix.compare is compare
    assert gaussmix.comparison.compare is compare
    assert not callable(gaussmix.comparison)


def test_compare_refuses_bad_input():
    rng = np.random.default_rng(1)
    tree = fixed_tree(rng.normal(size=10), rng)
    with pytest.raises(ValueError, match="at least two"):
        compare({"only": tree})
    with pytest.raises(ValueError, match="no log_likelihood"):
        compare({"a": tree, "b": from_dict({"posterior": {"mu": rng.normal(size=(2, 50))}})})


def mixture_posterior(rng, means, variances, weights, chains=4, draws=500):
    n_components, n_features = means.shape
    return from_dict(
        {
            "posterior": {
                "weights": weights + 0.01 * rng.normal(size=(chains, draws, n_components)),
                "means": means + 0.1 * rng.normal(size=(chains, draws, n_components, n_features)),
                "variances": variances
                * rng.gamma(100, 1 / 100, size=(chains, draws, n_components, n_features)),
            }
        }
    )


def test_point_versus_posterior_aligns_mixture_components():
    rng = np.random.default_rng(2)
    means = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    variances = np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]])
    weights = np.array([0.5, 0.3, 0.2])
    tree = mixture_posterior(rng, means, variances, weights)
    order = [2, 0, 1]  # the point comes in another labelling
    point = {"weights": weights[order], "means": means[order] + 0.05, "variances": variances[order]}
    table = point_versus_posterior(point, tree)
    np.testing.assert_allclose(table.loc["means[1, 0]", "point"], 5.05)
    np.testing.assert_allclose(table.loc["weights[0]", "point"], 0.5)
    assert table["inside"].all()
    flat = tree.posterior["means"].values.reshape(-1, 3, 2)[:, 1, 0]
    lower, upper = np.quantile(flat, [0.03, 0.97])
    row = table.loc["means[1, 0]"]
    np.testing.assert_allclose([row["lower"], row["upper"]], [lower, upper])
    np.testing.assert_allclose(row["z"], (5.05 - flat.mean()) / flat.std(ddof=1))


def test_point_versus_posterior_orders_one_dimensional_components():
    rng = np.random.default_rng(3)
    tree = mixture_posterior(
        rng, np.array([[-3.0], [2.0]]), np.array([[1.0], [1.0]]), np.array([0.6, 0.4])
    )
    point = {"weights": np.array([0.4, 0.6]), "means": np.array([[2.0], [-3.0]])}
    table = point_versus_posterior(point, tree, var_names=["means", "weights"])
    assert table.loc["means[0, 0]", "point"] == -3.0
    assert table.loc["weights[0]", "point"] == 0.6
    assert list(table.index) == ["means[0, 0]", "means[1, 0]", "weights[0]", "weights[1]"]
    # Draws that kept a descending start's labelling (NUTS from init): same rank order.
    descending = mixture_posterior(
        rng, np.array([[2.0], [-3.0]]), np.array([[1.0], [1.0]]), np.array([0.4, 0.6])
    )
    point = {"weights": np.array([0.6, 0.4]), "means": np.array([[-3.0], [2.0]])}
    table = point_versus_posterior(point, descending, var_names=["means", "weights"])
    assert table.loc["means[0, 0]", "point"] == 2.0
    assert table.loc["weights[0]", "point"] == 0.4
    assert table["inside"].all()


def test_point_outside_the_interval_is_flagged():
    draws = np.random.default_rng(4).normal(0.0, 1.0, size=(4, 1000))
    table = point_versus_posterior({"mu": 5.0}, from_dict({"posterior": {"mu": draws}}))
    assert not table.loc["mu", "inside"]
    assert table.loc["mu", "z"] > 4


def test_point_versus_posterior_refuses_bad_input():
    tree = from_dict({"posterior": {"mu": np.zeros((2, 10))}})
    with pytest.raises(ValueError, match="ci_prob"):
        point_versus_posterior({"mu": 0.0}, tree, ci_prob=1.5)
    with pytest.raises(ValueError, match="not in both"):
        point_versus_posterior({"mu": 0.0}, tree, var_names=["sigma"])
    with pytest.raises(ValueError, match="shape"):
        point_versus_posterior({"mu": np.zeros(3)}, tree)
    with pytest.raises(ValueError, match="posterior"):
        point_versus_posterior({"mu": 0.0}, {"mu": 0.0})


def test_select_components_by_loo_keeps_the_posteriors():
    """criterion="loo": NUTS per K, LOOIC = -2 elpd_loo, best K by LOO (shapes of the 1-D SBC)."""
    from gaussmix.models.priors import MixturePriorParameters
    from gaussmix.selection import select_components

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(-4.0, 1.0, 25), rng.normal(4.0, 1.0, 25)])[:, None]
    prior = MixturePriorParameters(
        weight_concentration=np.asarray(5.0),
        mean_prior=np.zeros(1),
        mean_precision=np.asarray(0.05),
        degrees_of_freedom=np.asarray(10.0),
        covariance_prior=np.asarray(10.0),
    )
    options = {
        "num_warmup": 200,
        "num_samples": 198,
        "num_chains": 1,
        "progress_bar": False,
        "prior_parameters": prior,
    }
    table, best = select_components(
        x, [1, 2], "spherical", criterion="loo", mcmc_options=options, seed=0
    )
    assert table.criterion_name == "loo" and best.n_components == 2
    assert len(table.posteriors) == 2
    # The posterior of the best K starts at the estimator and keeps its labelling.
    tree = table.posteriors[1]
    assert tree.posterior.attrs["init"] == "init"
    np.testing.assert_allclose(tree["mixture"]["reference_means"].values, best.means_)
    np.testing.assert_allclose(
        tree.posterior["means"].mean(("chain", "draw")).values, best.means_, atol=0.6
    )
    with pytest.raises(ValueError, match="cannot hold 'init'"):
        select_components(x, [2], "spherical", criterion="loo", mcmc_options={"init": {}})
    ranking = compare({f"K={k}": tree for k, tree in zip([1, 2], table.posteriors, strict=True)})
    assert ranking.index[0] == "K=2"
    np.testing.assert_allclose(-2 * ranking.loc["K=2", "elpd"], table.criterion[1], rtol=1e-10)

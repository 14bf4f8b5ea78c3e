"""LOO comparison and the point-versus-posterior table."""

import numpy as np
import pytest
from arviz_base import from_dict

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
        x, [1, 2], "spherical", criterion="loo", mcmc_options=options, random_state=0
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

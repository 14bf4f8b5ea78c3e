"""select_components: BIC / AIC tables and the chosen number of components."""

import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gaussmix import GaussianMixture, select_components
from gaussmix.inference import em
from gaussmix.inference.em import ConvergenceWarning

CANDIDATES = range(1, 5)


def three_blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    # 120 points in 2-D: the shapes of the estimator tests (shared compiled programs)
    return np.concatenate([rng.normal(size=(40, 2)) + c for c in centres])


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_table_is_scikit_learns_criterion_from_the_same_start(criterion):
    """Each row against scikit-learn's own GaussianMixture, started where gaussmix starts
    (its initialization read off a ``max_iter=0`` fit with the same random_state) and run
    with the same tol and max_iter: the same EM, so only float64 rounding separates them:
    sums of N = 120 log densities, sqrt(N) eps = 2.4e-15 relative (measured 2.2e-16);
    1e-14 relative."""
    x = three_blobs()
    table, best = select_components(
        x, CANDIDATES, criterion=criterion, seed=0, init_params="kmeans"
    )
    assert isinstance(best, GaussianMixture) and best.n_components == 3
    assert table.criterion_name == criterion
    np.testing.assert_array_equal(table.n_components, list(CANDIDATES))
    assert table.converged.all()
    for k, value, log_likelihood in zip(
        table.n_components, table.criterion, table.log_likelihood, strict=True
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=0 warns nothing
            start = GaussianMixture(int(k), max_iter=0, random_state=0).fit(x)
        reference = SklearnGaussianMixture(
            int(k),
            weights_init=start.weights_,
            means_init=start.means_,
            precisions_init=start.precisions_,
        ).fit(x)
        expected = reference.bic(x) if criterion == "bic" else reference.aic(x)
        np.testing.assert_allclose(value, expected, rtol=1e-14)
        np.testing.assert_allclose(log_likelihood, reference.score(x) * len(x), rtol=1e-14)
    assert table.n_components[np.argmin(table.criterion)] == best.n_components


def test_aic_penalizes_less_than_bic():
    x = three_blobs()
    bic, _ = select_components(x, CANDIDATES, seed=0)
    aic, _ = select_components(x, CANDIDATES, criterion="aic", seed=0)
    np.testing.assert_allclose(aic.log_likelihood, bic.log_likelihood)
    parameters = (bic.criterion - aic.criterion) / (np.log(len(x)) - 2.0)
    np.testing.assert_allclose(parameters, [5, 11, 17, 23])  # 6K - 1 for full, D = 2


def test_sample_weights_enter_the_criterion():
    x = three_blobs()
    weight = np.random.default_rng(3).integers(0, 3, len(x)).astype(float)
    table, best = select_components(x, CANDIDATES, sample_weight=weight, seed=0)
    per_point = best.score_samples(x)
    index = int(np.flatnonzero(table.n_components == best.n_components)[0])
    np.testing.assert_allclose(table.log_likelihood[index], np.sum(weight * per_point))
    expected = -2 * np.sum(weight * per_point) + best._n_parameters() * np.log(weight.sum())
    np.testing.assert_allclose(table.criterion[index], expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"criterion": "waic"}, "Unknown criterion 'waic'"),
        ({"n_components": [0, 1]}, "int >= 1"),
        ({"n_components": []}, "empty"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_components(three_blobs(), **kwargs)


def test_random_state_is_the_deprecated_spelling_of_seed():
    """``random_state`` (the estimator's name) still works for one release: a
    FutureWarning naming ``seed``, and the very same table (same seed, same programs:
    bit for bit)."""
    x = three_blobs()
    table, best = select_components(x, CANDIDATES, seed=0)
    with pytest.warns(FutureWarning, match="'random_state' is deprecated.*use 'seed'"):
        old_table, old_best = select_components(x, CANDIDATES, random_state=0)
    np.testing.assert_array_equal(old_table.criterion, table.criterion)
    np.testing.assert_array_equal(old_best.means_, best.means_)
    with pytest.raises(ValueError, match="got both 'seed'=1"):
        select_components(x, CANDIDATES, seed=1, random_state=0)


# --------------------------------------------------------------------------------------
# ICL and the table of several covariance models (issue 18).


def icl_by_hand(estimator, x, weight=None):
    """mclust's ICL from scipy's densities of the fitted parameters: BIC minus twice
    the log responsibility of each point's most probable component (scikit-learn's
    sign), weighted as select_components weighs the BIC."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    covariances = {
        "full": lambda: estimator.covariances_,
        "tied": lambda: [estimator.covariances_] * estimator.n_components,
        "diag": lambda: [np.diag(v) for v in estimator.covariances_],
        "spherical": lambda: [v * np.eye(x.shape[1]) for v in estimator.covariances_],
    }[estimator.covariance_type]()
    joint = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(x)
            for w, m, c in zip(estimator.weights_, estimator.means_, covariances, strict=True)
        ],
        axis=1,
    )
    log_density = logsumexp(joint, axis=1)
    log_z_map = np.max(joint, axis=1) - log_density
    weight = np.ones(len(x)) if weight is None else weight
    n_parameters = em.n_parameters(estimator.covariance_type, estimator.n_components, x.shape[1])
    bic = -2 * np.sum(weight * log_density) + n_parameters * np.log(weight.sum())
    return bic - 2 * np.sum(weight * log_z_map)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_icl_is_bic_plus_the_cost_of_the_map_labels(covariance_type):
    """Against scipy's densities, with and without weights (1e-10 relative: sums of
    120 log densities, computed two ways); ICL >= BIC, equal for K = 1."""
    from gaussmix.selection import integrated_completed_likelihood

    x = three_blobs()
    x[:40] += 2.5  # two of the blobs overlap: ambiguous labels, a visible penalty
    weight = np.random.default_rng(1).uniform(0.2, 3.0, len(x))
    estimator = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(x)
    icl = integrated_completed_likelihood(estimator, x)
    np.testing.assert_allclose(icl, icl_by_hand(estimator, x), rtol=1e-10)
    assert icl - estimator.bic(x) > 1.0
    weighted = integrated_completed_likelihood(estimator, x, sample_weight=weight)
    np.testing.assert_allclose(weighted, icl_by_hand(estimator, x, weight), rtol=1e-10)
    one = GaussianMixture(1, covariance_type=covariance_type).fit(x)
    np.testing.assert_allclose(integrated_completed_likelihood(one, x), one.bic(x), rtol=1e-12)


def test_icl_bad_input():
    from gaussmix.selection import integrated_completed_likelihood

    x = three_blobs()
    estimator = GaussianMixture(2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="sample_weight has shape"):
        integrated_completed_likelihood(estimator, x, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        integrated_completed_likelihood(estimator, x, sample_weight=-np.ones(len(x)))
    with pytest.raises(ValueError, match="NaN"):
        integrated_completed_likelihood(estimator, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="features"):
        integrated_completed_likelihood(estimator, np.ones((4, 3)))
    with pytest.raises(Exception, match="not fitted"):
        integrated_completed_likelihood(GaussianMixture(2), x)


MODELS = ["full", "spherical", "diag"]


@pytest.mark.parametrize("criterion", ["bic", "aic", "icl"])
def test_table_of_models_is_each_models_own_selection(criterion):
    """Every column of the (K x model) table is select_components of that model alone
    (the same seed, the same fits: bit for bit), and the best is the smallest cell."""
    x = three_blobs()
    table, best = select_components(x, CANDIDATES, MODELS, criterion, seed=0)
    assert table.criterion.shape == (len(CANDIDATES), len(MODELS))
    assert table.covariance_types == tuple(MODELS) and table.criterion_name == criterion
    assert not table.failures and table.converged.all()
    for column, model in enumerate(MODELS):
        single, _ = select_components(x, CANDIDATES, model, criterion, seed=0)
        np.testing.assert_array_equal(table.criterion[:, column], single.criterion)
        np.testing.assert_array_equal(table.log_likelihood[:, column], single.log_likelihood)
        np.testing.assert_array_equal(
            table.n_parameters[:, column],
            [em.n_parameters(model, k, 2) for k in CANDIDATES],
        )
    row, column = np.unravel_index(np.argmin(table.criterion), table.criterion.shape)
    assert (best.n_components, best.covariance_type) == (
        table.n_components[row],
        MODELS[column],
    )
    assert (table.best_n_components, table.best_covariance_type) == (
        best.n_components,
        best.covariance_type,
    )
    if criterion != "icl":  # the estimator's own bic / aic
        own = best.bic(x) if criterion == "bic" else best.aic(x)
        np.testing.assert_allclose(table.criterion[row, column], own, rtol=1e-12)
    summary = table.summary(3)
    assert summary[0] == (best.covariance_type, best.n_components, table.criterion[row, column])
    assert [value for *_, value in summary] == sorted(np.sort(table.criterion.ravel())[:3])


def test_failed_cells_are_nan_with_their_reason():
    """K > N fails for every model; a component on duplicated points collapses for the
    full model without reg_covar: NaN cells, the reason kept, the rest of the table
    computed and the best chosen among the finite cells."""
    x = np.concatenate([np.zeros((6, 2)), three_blobs()[:4]])  # 6 equal points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table, best = select_components(x, [1, 2, 11], ["spherical", "full"], seed=0, reg_covar=0.0)
    assert np.isnan(table.criterion[2]).all()
    assert "n_samples" in table.failures[(11, "spherical")]
    failed = {cell for cell in table.failures if cell[0] != 11}
    assert failed, "a collapsed component was expected for some K <= 2"
    for k, model in failed:
        assert "ill-defined empirical covariance" in table.failures[(k, model)]
        row, column = [1, 2, 11].index(k), ["spherical", "full"].index(model)
        assert np.isnan(table.criterion[row, column]) and not table.converged[row, column]
    finite = np.isfinite(table.criterion)
    assert finite.any()
    assert best.bic(x) == pytest.approx(np.nanmin(table.criterion), rel=1e-12)


def test_every_cell_failing_raises_the_first_reason():
    with pytest.raises(ValueError, match=r"Every fit failed; the first, K = 5, full:.*n_samples"):
        select_components(three_blobs()[:4], [5], ["full", "diag"])


@pytest.mark.parametrize(
    ("covariance_type", "kwargs", "message"),
    [
        (["full", "VVX"], {}, r"Unknown covariance_type \['VVX'\]; the estimator knows"),
        (["full", "full"], {}, "lists a model twice"),
        (["VVV", "diag", "full"], {}, "lists a model twice.*VVV.*full"),
        ([], {}, "a name, a list of names or 'all'"),
        (3, {}, "a name, a list of names or 'all'"),
        (["full", "diag"], {"criterion": "loo"}, "criterion='loo' samples one covariance"),
    ],
)
def test_bad_covariance_types(covariance_type, kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_components(three_blobs(), CANDIDATES, covariance_type, **kwargs)


def test_bad_data_raises_before_any_fit():
    x = three_blobs()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_components(x, CANDIDATES, "all")


def test_all_is_mclusts_14_models_once_each():
    """ "all" is mclust's 14 models in mclust's order (read from the estimator's
    registry), then any other type EM fits; no model twice (full is VVV, ...)."""
    from gaussmix.models import priors
    from gaussmix.selection import covariance_models

    models = covariance_models()
    assert models[:14] == tuple(priors.MCLUST_MODELS)
    same = [priors.canonical_covariance_type(name) for name in models]
    assert len(set(same)) == len(same)
    assert set(same) == {priors.canonical_covariance_type(n) for n in priors.EM_COVARIANCE_TYPES}


def test_the_table_plot_has_a_line_per_model_and_stars_the_best():
    import matplotlib

    matplotlib.use("Agg")
    from gaussmix.plots.selection import plot_criterion_table

    x = three_blobs()
    table, best = select_components(x, CANDIDATES, MODELS, seed=0)
    ax = plot_criterion_table(table)
    lines = {line.get_label(): line for line in ax.lines}
    for column, model in enumerate(MODELS):
        np.testing.assert_array_equal(lines[model].get_ydata(), table.criterion[:, column])
    star = lines[f"best: {best.covariance_type}, K = {best.n_components}"]
    assert star.get_marker() == "*"
    assert float(star.get_ydata()[0]) == np.min(table.criterion)
    assert ax.get_ylabel() == "BIC (lower is better)"
    failed = table._replace(criterion=np.where(np.eye(4, 3) > 0, np.nan, table.criterion))
    plot_criterion_table(failed)  # NaN cells are gaps
    with pytest.raises(ValueError, match="expected \\(len\\(n_components\\)"):
        plot_criterion_table(table._replace(criterion=table.criterion[:, 0]))
    with pytest.raises(ValueError, match="not all NaN"):
        plot_criterion_table(table._replace(criterion=np.full((4, 3), np.nan)))


def test_the_programs_load_once_while_the_clustering_runs():
    """The hc start: a thread loads the models' padded programs while the clustering
    computes their start, and the fits find them in memory: each program loaded once
    (fails without the preloading: the fits' own loads, no program found in memory)."""
    from gaussmix.inference import compilation

    x = three_blobs()
    select_components(x, [1, 2, 3], ["diag", "spherical"], seed=0)  # stored, if new
    compilation.clear_memory()
    before = compilation.statistics()
    select_components(x, [1, 2, 3], ["diag", "spherical"], seed=0)
    after = compilation.statistics()
    made = {name: after[name] - before[name] for name in after}
    # two EM and two scoring programs (one per layout) preloaded, then the best's refit
    assert made["disk"] + made["compiled"] == 5
    assert made["memory"] == 4


def test_a_table_is_one_program_per_model_and_one_refit(monkeypatch):
    """The k-means start, maximum likelihood: every K of a model is one padded fit
    (gaussmix.inference.em.candidates), the estimator fitted once more for the best
    cell only."""
    from gaussmix.inference.em import candidates

    fits, refits = [], []
    start_candidates = candidates.start_candidates
    monkeypatch.setattr(
        candidates, "start_candidates", lambda *a, **k: fits.append(1) or start_candidates(*a, **k)
    )
    fit = GaussianMixture.fit
    monkeypatch.setattr(
        GaussianMixture, "fit", lambda self, *a, **k: refits.append(1) or fit(self, *a, **k)
    )
    table, _ = select_components(three_blobs(), [1, 2, 3], ["diag", "spherical"], seed=0)
    assert len(fits) == 2 and len(refits) == 1
    single, _ = select_components(three_blobs(), [1, 2, 3], "diag", seed=0)
    assert len(fits) == 3 and len(refits) == 2
    np.testing.assert_array_equal(single.criterion, table.criterion[:, 0])


#: tied, diag and full layouts; the three warm starts of the iterative M-steps (VEV
#: shares VEI's fixed point; full is checked against scikit-learn above)
PADDED_MODELS = ["EEE", "VEI", "VEE", "EVE"]


def test_padded_cells_are_each_estimator_alone():
    """A K = 2 cell fitted inside a program of K = 4 components (two padding components:
    weight 0, out of every sum over components, out of the iterative M-steps' warm
    starts) is the estimator's own K = 2 fit from the same (default, hc) start, to
    rounding (1e-11 relative; measured 1e-15 to 4e-11 over mclust's 14 models, K =
    1..9, 5000 x 5: the iterative M-steps stop within sqrt(16 eps) of their fixed
    point), for the tied, diag and full layouts and every iterative M-step (the k-means
    start: the test against scikit-learn above)."""
    from gaussmix.selection import integrated_completed_likelihood

    x = three_blobs()
    table, best = select_components(x, [2, 4], PADDED_MODELS, "icl", seed=0)
    assert not table.failures and best.init_params == "hc"
    for column, model in enumerate(PADDED_MODELS):
        alone = GaussianMixture(2, covariance_type=model, init_params="hc", random_state=0)
        alone.fit(x)
        np.testing.assert_allclose(
            table.criterion[0, column], integrated_completed_likelihood(alone, x), rtol=1e-11
        )
        np.testing.assert_allclose(
            table.log_likelihood[0, column], np.sum(alone.score_samples(x)), rtol=1e-11
        )
        assert table.converged[0, column] == alone.converged_


def test_the_default_start_is_mclusts_hc_and_k_means_where_refused():
    """select_components starts from mclust's hc (the estimator returned says so, with
    the seed drawn: refitting it gives the table's cell); given init_params is kept; a
    sharded or chunked fit (no hc) gets k-means."""
    x = three_blobs()
    table, best = select_components(x, [1, 3], "spherical", seed=None)
    assert best.init_params == "hc" and isinstance(best.random_state, int)
    again = GaussianMixture(
        3,
        covariance_type="spherical",
        **{k: best.get_params()[k] for k in ("init_params", "random_state")},
    ).fit(x)
    np.testing.assert_allclose(table.criterion[1], again.bic(x), rtol=1e-11)
    _, chosen = select_components(x, [3], "spherical", seed=0, init_params="random")
    assert chosen.init_params == "random"
    _, chunked = select_components(x, [3], "spherical", seed=0, chunk_size=50)
    assert chunked.init_params == "kmeans"


def test_the_default_start_is_k_means_above_the_features_hc_affords():
    """mclust's hc costs about rows^2 D^2 in NumPy: the table's default start is hc up to
    HC_DEFAULT_MAX_FEATURES features, k-means above (the same fit as asking for it)."""
    from gaussmix.selection import HC_DEFAULT_MAX_FEATURES

    rng = np.random.default_rng(3)
    wide = rng.normal(size=(120, HC_DEFAULT_MAX_FEATURES + 1))
    wide[:60] += 4.0
    table, best = select_components(wide, [1, 2], "diag", seed=0)
    assert best.init_params == "kmeans"
    asked, _ = select_components(wide, [1, 2], "diag", seed=0, init_params="kmeans")
    np.testing.assert_array_equal(table.criterion, asked.criterion)
    _, narrow = select_components(wide[:, :HC_DEFAULT_MAX_FEATURES], [1, 2], "diag", seed=0)
    assert narrow.init_params == "hc"


def test_integer_weights_give_the_table_of_repeated_rows():
    """sample_weight w is w repeated rows in the whole table, the default hc start
    included (its clustering counts a row of weight w as w coincident rows): the
    criterion of every cell equals the repeated rows' to 1e-8 relative. Rows of weight
    0 pad the weighted data to the repeated rows' 120 (the same compiled programs)."""
    rows = three_blobs()[::3]
    weight = np.tile([1, 2, 3, 4, 5], 8)
    repeated = np.repeat(rows, weight, axis=0)
    padded = np.concatenate([rows, rows, rows])
    padded_weight = np.concatenate([weight, np.zeros(80, dtype=int)])
    models = ["VVV", "EII"]
    ours, best = select_components(padded, [1, 2, 3], models, sample_weight=padded_weight, seed=0)
    theirs, _ = select_components(repeated, [1, 2, 3], models, seed=0)
    assert best.init_params == "hc" and not ours.failures
    np.testing.assert_allclose(ours.criterion, theirs.criterion, rtol=1e-8)
    np.testing.assert_allclose(ours.log_likelihood, theirs.log_likelihood, rtol=1e-8)


def test_a_table_and_its_refit_cluster_once(monkeypatch):
    """mclust clusters once per data set for the whole table; so does select_components:
    the best cell's refit (the estimator alone, the same hc start) recalls the table's
    clustering instead of computing it again."""
    from gaussmix.inference.em import hierarchical

    calls = []
    cluster = hierarchical._cluster
    monkeypatch.setattr(hierarchical, "_MEMO", type(hierarchical._MEMO)())
    monkeypatch.setattr(
        hierarchical, "_cluster", lambda *args: calls.append(args[1]) or cluster(*args)
    )
    table, best = select_components(three_blobs(), [1, 2, 3], ["VVV", "EII"], seed=0)
    assert best.init_params == "hc" and table.best_n_components == 3
    assert calls == ["VVV"]

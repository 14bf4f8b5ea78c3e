"""gaussmix.BayesianGaussianMixture against scikit-learn's, and as a hostile user.

The reference is scikit-learn's ``BayesianGaussianMixture`` started from the same point:
the same responsibilities (scikit-learn's ``_initialize(X, resp)``; gaussmix's statistics
of them through :func:`gaussmix.inference.em.variational.update`) or the same posterior
(scikit-learn's ``_set_parameters`` given gaussmix's start). The lower bound must agree at
every iteration to 1e-8 relative in float64, and the fitted attributes with it.
"""

import warnings

import numpy as np
import pytest

sklearn_mixture = pytest.importorskip("sklearn.mixture")

from gaussmix import BayesianGaussianMixture  # noqa: E402
from gaussmix.inference.em import variational  # noqa: E402
from gaussmix.inference.em.statistics import SufficientStatistics  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
N_COMPONENTS = 4
N_ITER = 6
RTOL = 1e-8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(20261207)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    x = np.concatenate([rng.normal(c, [1.0, 0.6], (50, 2)) for c in centres])
    return x, rng


def _reference(resp_or_parameters, **kwargs):
    """scikit-learn's estimator started from given responsibilities (an array) or a
    posterior (scikit-learn's ``_get_parameters`` tuple)."""

    class Started(sklearn_mixture.BayesianGaussianMixture):
        def _initialize_parameters(self, X, random_state, xp=None):
            if isinstance(resp_or_parameters, np.ndarray):
                self._initialize(X, resp_or_parameters)
            else:
                self._set_parameters(resp_or_parameters)

    return Started(**kwargs)


def _statistics(x, resp, centre, layout):
    """Sufficient statistics of responsibilities computed in NumPy (moments about centre)."""
    xc = x - centre
    counts, first = resp.sum(0), resp.T @ xc
    second = {
        "full": lambda: np.einsum("nk,ni,nj->kij", resp, xc, xc),
        "tied": lambda: xc.T @ xc,
        "diag": lambda: resp.T @ xc**2,
        "spherical": lambda: resp.T @ (xc**2).sum(1),
    }[layout]()
    return SufficientStatistics(counts, first, second, np.zeros(()), np.asarray(len(x), float))


def _sklearn_parameters(estimator):
    concentration = np.asarray(estimator.weight_concentration_)
    return (
        concentration,
        estimator.mean_precision_,
        estimator.means_,
        estimator.degrees_of_freedom_,
        estimator.covariances_,
        estimator.precisions_cholesky_,
    )


ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "mean_precision_",
    "degrees_of_freedom_",
)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_equals_scikit_learns_at_every_iteration(data, prior_type, covariance_type):
    """From the same responsibilities (random, so every component is used unevenly), the
    bound of every iteration and the final posterior agree with scikit-learn's."""
    x, _ = data
    resp = np.random.default_rng(1).dirichlet(np.ones(N_COMPONENTS), len(x))
    options = dict(
        n_components=N_COMPONENTS,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type,
        max_iter=N_ITER,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn_mixture._base.ConvergenceWarning)
        reference = _reference(resp, **options).fit(x)
    config = variational.VariationalConfig(N_COMPONENTS, covariance_type, prior_type)
    prior = variational.default_prior(x, config)
    centre = x.mean(0)
    start = variational.update(
        _statistics(x, resp, centre, covariance_type), prior, centre, 1e-6, config
    )
    state, converged, history = variational.fit(
        start, x, None, prior, 1e-6, 0.0, config, max_iter=N_ITER
    )
    expected = np.ravel(reference.lower_bounds_)
    assert expected.shape == (N_ITER,)
    np.testing.assert_allclose(np.asarray(history), expected, rtol=RTOL, atol=0)
    assert int(state.n_iter) == N_ITER and not bool(converged)
    for got, want in zip(state.parameters, _sklearn_parameters(reference), strict=True):
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want).reshape(np.shape(got)), rtol=1e-7, atol=1e-10
        )


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_estimator_attributes_equal_scikit_learns(data, prior_type, covariance_type):
    """The estimator from its own k-means start, and scikit-learn from that start: every
    iteration's bound, the fitted attributes, the predictions and scores agree."""
    x, _ = data
    options = dict(
        n_components=N_COMPONENTS,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type,
        tol=0.0,
        random_state=0,
    )
    start = BayesianGaussianMixture(max_iter=0, **options).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both: did not converge (max_iter, tol=0)
        fitted = BayesianGaussianMixture(max_iter=N_ITER, **options).fit(x)
        reference = _reference(_sklearn_parameters(start), max_iter=N_ITER, **options).fit(x)
    np.testing.assert_allclose(
        fitted.lower_bounds_, np.ravel(reference.lower_bounds_), rtol=RTOL, atol=0
    )
    assert fitted.n_iter_ == reference.n_iter_ == N_ITER
    assert fitted.converged_ is reference.converged_ is False
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            getattr(fitted, name), getattr(reference, name), rtol=1e-7, atol=1e-10, err_msg=name
        )
    for want, got in zip(
        np.atleast_2d(reference.weight_concentration_),
        np.atleast_2d(fitted.weight_concentration_),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-7)
    for name in (
        "mean_prior_",
        "covariance_prior_",
        "degrees_of_freedom_prior_",
        "mean_precision_prior_",
        "weight_concentration_prior_",
    ):
        np.testing.assert_allclose(
            getattr(fitted, name), getattr(reference, name), rtol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(fitted.score_samples(x), reference.score_samples(x), rtol=1e-8)
    np.testing.assert_allclose(
        fitted.predict_proba(x), reference.predict_proba(x), rtol=1e-6, atol=1e-10
    )
    np.testing.assert_array_equal(fitted.predict(x), reference.predict(x))


def test_mclust_names_are_the_four_families(data):
    """VVV, EEE, VVI, VII fit as full, tied, diag, spherical; mclust's other models are
    refused naming the ones that exist. (The options of
    test_estimator_attributes_equal_scikit_learns: the same compiled programs.)"""
    x, _ = data
    options = dict(n_components=N_COMPONENTS, random_state=0, max_iter=N_ITER, tol=0.0)
    for alias, family in (("VVI", "diag"), ("VII", "spherical")):
        a = BayesianGaussianMixture(covariance_type=alias, **options)
        b = BayesianGaussianMixture(covariance_type=family, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a.fit(x), b.fit(x)
        np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
        np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\['full', 'tied', 'diag', 'spherical'.*Got 'EEV'"):
        BayesianGaussianMixture(covariance_type="EEV").fit(x)


def test_sample_weight_equals_repeated_rows(data):
    """Integer weights give the priors and every iteration of the rows repeated."""
    x, _ = data
    weight = np.random.default_rng(2).integers(0, 4, len(x))
    repeated = np.repeat(x, weight, axis=0)
    options = dict(n_components=N_COMPONENTS, covariance_type="full", tol=0.0, random_state=0)
    weighted = BayesianGaussianMixture(max_iter=0, **options).fit(x, sample_weight=weight)
    copied = BayesianGaussianMixture(max_iter=0, **options).fit(repeated)
    for name in ("mean_prior_", "covariance_prior_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(copied, name), rtol=1e-12)
    # the same start for both (the posterior of the weighted start), then warm starts
    for name in (*ATTRIBUTES, "weight_concentration_", "lower_bound_"):
        setattr(copied, name, getattr(weighted, name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted.set_params(warm_start=True, max_iter=N_ITER).fit(x, sample_weight=weight)
        copied.set_params(warm_start=True, max_iter=N_ITER).fit(repeated)
    np.testing.assert_allclose(weighted.lower_bounds_, copied.lower_bounds_, rtol=1e-9)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            getattr(weighted, name), getattr(copied, name), rtol=1e-8, atol=1e-12, err_msg=name
        )


def test_float32_runs_close_to_float64(data):
    """float32 data fits in float32 and lands near the float64 fit (the same number of
    iterations: tol=0; the Dirichlet distribution, whose answer does not depend on the
    order in which the two k-means number the clusters)."""
    x, _ = data
    options = dict(
        n_components=3,
        covariance_type="diag",
        weight_concentration_prior_type="dirichlet_distribution",
        random_state=0,
        max_iter=60,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        double = BayesianGaussianMixture(**options).fit(x)
        single = BayesianGaussianMixture(**options).fit(x.astype(np.float32))
    assert single.means_.dtype == np.float32 and single.predict_proba(x).dtype == np.float32
    order_d, order_s = np.argsort(double.means_[:, 0]), np.argsort(single.means_[:, 0])
    np.testing.assert_allclose(single.means_[order_s], double.means_[order_d], atol=1e-3)
    np.testing.assert_allclose(single.weights_[order_s], double.weights_[order_d], atol=1e-3)
    np.testing.assert_allclose(single.lower_bounds_, double.lower_bounds_, rtol=1e-5)


def test_fit_predict_sample_and_converged_monotone_bound(data):
    """fit_predict equals fit(X).predict(X); the bound never decreases; sample draws from
    the fitted mixture; the excess components of the process get little weight."""
    x, _ = data
    bgm = BayesianGaussianMixture(n_components=6, random_state=3, max_iter=500)
    labels = bgm.fit_predict(x)
    np.testing.assert_array_equal(labels, bgm.predict(x))
    assert bgm.converged_ and np.all(np.diff(bgm.lower_bounds_) >= -1e-9)
    assert bgm.lower_bound_ == bgm.lower_bounds_[-1]
    assert np.sort(bgm.weights_)[-3:].sum() > 0.97
    drawn, components = bgm.sample(500)
    assert drawn.shape == (500, 2) and components.shape == (500,)
    assert abs(drawn.mean(0) - x.mean(0)).max() < 0.6


@pytest.mark.parametrize(
    ("options", "fit_kwargs", "message"),
    [
        ({"weight_concentration_prior": -1.0}, {}, "'weight_concentration_prior' parameter"),
        ({"mean_precision_prior": 0.0}, {}, "'mean_precision_prior' parameter"),
        ({"degrees_of_freedom_prior": 1.0}, {}, "should be greater than 1, but got 1.000"),
        ({"covariance_prior": np.array([[1.0, 2.0], [2.0, 1.0]])}, {}, "positive-definite"),
        ({"covariance_prior": np.eye(3)}, {}, r"shape of \(2, 2\), but got \(3, 3\)"),
        ({"covariance_type": "diag", "covariance_prior": [1.0, -1.0]}, {}, "positive"),
        ({"covariance_type": "spherical", "covariance_prior": 0.0}, {}, "greater than 0"),
        ({"mean_prior": [0.0, np.nan]}, {}, "NaN or infinity"),
        ({"mean_prior": [0.0]}, {}, r"shape of \(2,\), but got \(1,\)"),
        ({"weight_concentration_prior_type": "pitman_yor"}, {}, "dirichlet_process"),
        ({"init_params": "hc"}, {}, "'init_params' parameter"),
        ({}, {"sample_weight": -np.ones(150)}, "negative"),
        ({}, {"sample_weight": np.ones(3)}, r"expected \(150,\)"),
        ({"n_components": 200}, {}, "n_samples >= n_components"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(data, options, fit_kwargs, message):
    x, _ = data
    with pytest.raises(ValueError, match=message):
        BayesianGaussianMixture(**options).fit(x, **fit_kwargs)


def test_nan_rows_and_unfitted_use_are_refused(data):
    x, _ = data
    holed = x.copy()
    holed[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        BayesianGaussianMixture().fit(holed)
    with pytest.raises(ValueError, match="not fitted yet"):
        BayesianGaussianMixture().predict(x)


SAVED_PRIORS = dict(zip(COVARIANCE_TYPES, PRIOR_TYPES * 2, strict=True))


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    """One fit per covariance type (both weight priors among them), saved."""
    import gaussmix

    x, _ = data
    folder = tmp_path_factory.mktemp("saved")
    fits = {}
    for covariance_type, prior_type in SAVED_PRIORS.items():
        model = BayesianGaussianMixture(
            n_components=N_COMPONENTS,
            covariance_type=covariance_type,
            weight_concentration_prior_type=prior_type,
            max_iter=N_ITER,
            tol=0.0,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x)
        fits[covariance_type] = (model, gaussmix.save(model, folder / f"{covariance_type}.npz"))
    return fits


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_save_load_round_trip_predicts_exactly_and_warm_starts_alike(data, saved, covariance_type):
    """Every fitted attribute comes back equal (its type too); predictions and scores are
    bit-identical; a warm-started fit continues from the loaded posterior as from the
    original one."""
    import gaussmix
    from gaussmix.io import FITTED_ATTRIBUTES

    x, _ = data
    model, path = saved[covariance_type]
    loaded = gaussmix.load(path)
    assert type(loaded) is BayesianGaussianMixture
    assert loaded.get_params() == model.get_params()
    attributes = set(vars(model)) - set(model.get_params())
    allowed = FITTED_ATTRIBUTES["BayesianGaussianMixture"]
    assert attributes == {name for name, required in allowed.items() if required}
    for name in attributes:
        got, want = getattr(loaded, name), getattr(model, name)
        assert type(got) is type(want), name
        for a, b in zip(np.atleast_1d(got), np.atleast_1d(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.score_samples(x), model.score_samples(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = loaded.set_params(warm_start=True).fit(x)
        reference = gaussmix.load(path).set_params(warm_start=True)
        for name in attributes:  # the original object, not a second load
            setattr(reference, name, getattr(model, name))
        reference.fit(x)
    np.testing.assert_array_equal(again.lower_bounds_, reference.lower_bounds_)
    assert again.lower_bounds_[0] >= model.lower_bound_ - 1e-9 * abs(model.lower_bound_)


def _parts(path):
    import json

    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "header"}
        return json.loads(str(archive["header"])), arrays


def _changed_file(path, out, name, change, part=None):
    """The file with fitted attribute ``name`` (``part`` of a tuple) changed by ``change``
    (an array in the archive, or a number of the JSON header)."""
    import json

    header, arrays = _parts(path)
    fitted = header["state"]["fitted"]
    node = fitted[name] if part is None else fitted[name]["__tuple__"][part]
    if isinstance(node, dict) and "__array__" in node:
        arrays[node["__array__"]] = change(arrays[node["__array__"]])
    elif part is None:
        fitted[name] = change(node)
    with open(out, "wb") as file:
        np.savez(file, header=np.array(json.dumps(header)), **arrays)
    return out


@pytest.mark.parametrize(
    ("covariance_type", "name", "part", "change", "match"),
    [
        ("full", "weight_concentration_", 1, lambda a: -a, r"weight_concentration_\[1\] holds"),
        ("tied", "weight_concentration_", None, lambda a: a + np.arange(4), "posterior mean"),
        ("full", "weights_", None, lambda w: w[::-1], "posterior mean weights"),
        ("diag", "weights_", None, lambda w: w * 0.5, "sums to"),
        ("full", "mean_precision_", None, lambda b: -b, r"mean_precision_ holds values <= 0"),
        ("full", "degrees_of_freedom_", None, lambda v: v * 0 + 0.5, "holds values <= 1"),
        ("tied", "degrees_of_freedom_", None, lambda v: 1.0, r"degrees_of_freedom_ = 1.0 must"),
        ("full", "covariances_", None, lambda c: c * [[1, 1], [1, -1]], "positive definite"),
        ("spherical", "covariances_", None, lambda c: -c, "variances <= 0"),
        ("full", "precisions_", None, lambda p: p * 1.01, "not the product"),
        ("tied", "covariance_prior_", None, lambda c: -c, "covariance_prior_ is not positive"),
        ("spherical", "covariance_prior_", None, lambda c: 0.0, "covariance_prior_ = 0.0 must"),
        ("diag", "degrees_of_freedom_prior_", None, lambda v: 0.5, r"prior_ = 0.5 must be > 1"),
        ("full", "mean_prior_", None, lambda m: m[:1], r"mean_prior_ has shape \(1,\)"),
        ("diag", "lower_bounds_", None, lambda b: b[:-1], "list of n_iter_ = 6 numbers"),
        ("diag", "lower_bound_", None, lambda b: b + 1.0, "not the last of"),
        ("full", "means_", None, lambda m: m * np.nan, "NaN or infinite"),
    ],
)
def test_damaged_files_are_refused_naming_the_attribute(
    saved, tmp_path, covariance_type, name, part, change, match
):
    """A file whose fitted attribute was changed is refused (a ValueError naming the
    file and the attribute), never loaded into a model that predicts nonsense."""
    import gaussmix

    path = _changed_file(saved[covariance_type][1], tmp_path / "changed.npz", name, change, part)
    with pytest.raises(ValueError, match=match) as caught:
        gaussmix.load(path)
    assert str(path) in str(caught.value) and "save the fitted model again" in str(caught.value)


def test_unfitted_model_is_not_saved(tmp_path):
    import gaussmix

    with pytest.raises(ValueError, match="not fitted yet; call fit"):
        gaussmix.save(BayesianGaussianMixture(), tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


def test_statistics_summed_over_chunks_give_the_same_step(data):
    """The step needs only summed statistics: two chunks' statistics, added, give the
    compiled loop's first step (the seam a chunked or sharded fit would use)."""
    import jax

    from gaussmix.inference.em.statistics import sufficient_statistics

    x, _ = data
    weight = np.random.default_rng(3).uniform(0.5, 2.0, len(x))
    config = variational.VariationalConfig(N_COMPONENTS, "full", "dirichlet_process")
    prior = variational.default_prior(x, config, weight)
    start = (
        BayesianGaussianMixture(n_components=N_COMPONENTS, max_iter=0, random_state=0)
        .fit(x, sample_weight=weight)
        ._posterior(np.float64)
    )
    centre = weight @ x / weight.sum()

    @jax.jit
    def chunked_step(start, x_a, w_a, x_b, w_b):
        estep = variational.estep_parameters(start, config)
        a, b = (
            sufficient_statistics(
                xs, estep, covariance_type="full", centre=centre, sample_weight=ws, use_kernel=False
            )
            for xs, ws in ((x_a, w_a), (x_b, w_b))
        )
        total = jax.tree.map(lambda u, v: u + v, a, b)
        state = variational.VariationalState(start, -np.inf, 0)
        return variational.step(state, total, prior, centre, 1e-6, 0.0, config)[0]

    split = 61
    state = chunked_step(start, x[:split], weight[:split], x[split:], weight[split:])
    whole, _, history = variational.fit(start, x, weight, prior, 1e-6, 0.0, config, max_iter=1)
    np.testing.assert_allclose(float(state.lower_bound), float(history[0]), rtol=1e-10)
    for got, want in zip(state.parameters, whole.parameters, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def test_covariance_types_agree_after_one_update(data):
    """scikit-learn's test_compare_covar_type on gaussmix's start: after the first update
    from the same k-means responsibilities, the tied scale is the mean of the full ones,
    diag their diagonals, spherical the mean of those (all times the degrees of freedom)."""
    x, _ = data
    fits = {
        covariance_type: BayesianGaussianMixture(
            n_components=N_COMPONENTS,
            covariance_type=covariance_type,
            max_iter=0,
            random_state=0,
        ).fit(x)
        for covariance_type in COVARIANCE_TYPES
    }
    for covariance_type in COVARIANCE_TYPES:  # the same start
        np.testing.assert_allclose(fits[covariance_type].means_, fits["full"].means_, rtol=1e-12)
    full = fits["full"].covariances_ * fits["full"].degrees_of_freedom_[:, None, None]
    tied = fits["tied"].covariances_ * fits["tied"].degrees_of_freedom_
    np.testing.assert_allclose(tied, full.mean(0), rtol=1e-10)
    diag = fits["diag"].covariances_ * fits["diag"].degrees_of_freedom_[:, None]
    np.testing.assert_allclose(diag, np.array([np.diag(c) for c in full]), rtol=1e-10)
    spherical = fits["spherical"].covariances_ * fits["spherical"].degrees_of_freedom_
    np.testing.assert_allclose(spherical, diag.mean(1), rtol=1e-10)


# -- data read by chunks ---------------------------------------------------------------------


def _chunked_inputs(x, weight, how, folder):
    """``X`` and ``sample_weight`` for fit: the data read by chunks in one of four ways."""
    if how == "npy":
        np.save(folder / "x.npy", x)
        np.save(folder / "w.npy", weight)
        return str(folder / "x.npy"), np.load(folder / "w.npy", mmap_mode="r")
    pieces = [(x[a:b], weight[a:b]) for a, b in ((0, 61), (61, 62), (62, 150))]
    if how == "list":
        return pieces, None
    if how == "callable":
        return (lambda: iter(pieces)), None
    return x, weight  # chunk_size


CHUNKED_CASES = [
    ("full", "dirichlet_process", "npy"),
    ("tied", "dirichlet_distribution", "list"),
    ("diag", "dirichlet_process", "callable"),
    ("spherical", "dirichlet_distribution", "chunk_size"),
]


@pytest.mark.parametrize(("covariance_type", "prior_type", "how"), CHUNKED_CASES)
def test_chunked_fit_equals_the_in_memory_fit(data, tmp_path, covariance_type, prior_type, how):
    """Read by chunks (a .npy path with a memmap of weights, a list of (x, w) chunks of
    uneven sizes, one of a single row, a callable, chunk_size): the priors, the start
    (the data has fewer rows than the initialization sample), every iteration's lower
    bound and the posterior equal the in-memory fit's to 1e-10 in float64."""
    x, _ = data
    weight = np.random.default_rng(4).uniform(0.5, 2.0, len(x))
    options = dict(
        n_components=N_COMPONENTS,
        covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type,
        max_iter=N_ITER,
        tol=0.0,
        n_init=2,
        random_state=0,
    )
    X, sample_weight = _chunked_inputs(x, weight, how, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = BayesianGaussianMixture(**options).fit(x, sample_weight=weight)
        chunked = BayesianGaussianMixture(chunk_size=40 if how == "chunk_size" else None, **options)
        labels = chunked.fit_predict(X, sample_weight=sample_weight)
    np.testing.assert_allclose(chunked.lower_bounds_, memory.lower_bounds_, rtol=1e-10, atol=0)
    assert chunked.n_iter_ == memory.n_iter_ == N_ITER and chunked.n_features_in_ == 2
    for name in (*ATTRIBUTES, "mean_prior_", "covariance_prior_", "degrees_of_freedom_prior_"):
        np.testing.assert_allclose(
            getattr(chunked, name), getattr(memory, name), rtol=1e-10, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(
        np.ravel(chunked.weight_concentration_), np.ravel(memory.weight_concentration_), rtol=1e-10
    )
    np.testing.assert_array_equal(labels, memory.predict(x))


def test_chunked_warm_start_continues_like_the_in_memory_one(data):
    """A warm start from a fit continues over chunks as in memory (the same bounds)."""
    x, _ = data
    options = dict(n_components=N_COMPONENTS, max_iter=N_ITER, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = BayesianGaussianMixture(**options).fit(x)
        chunked = BayesianGaussianMixture(**options).fit(x)
        memory.set_params(warm_start=True).fit(x)
        chunked.set_params(warm_start=True).fit([x[:70], x[70:]])
    np.testing.assert_allclose(chunked.lower_bounds_, memory.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(chunked.means_, memory.means_, rtol=1e-10)
    with pytest.raises(ValueError, match="X has 3 features, but BayesianGaussianMixture is"):
        chunked.fit([np.ones((10, 3))])


def test_chunked_fit_from_a_sample_finds_the_clusters(data, monkeypatch):
    """More rows than the initialization sample: the start comes from a sample, the
    iterations read every row; the bound rises and the three clusters are found."""
    import gaussmix.bayesian_mixture as module

    x, _ = data
    monkeypatch.setattr(module, "DEFAULT_INIT_ROWS", 30)
    bgm = BayesianGaussianMixture(
        n_components=N_COMPONENTS, covariance_type="diag", random_state=0, max_iter=200
    ).fit([x[:100], x[100:]])
    assert bgm.converged_ and np.all(np.diff(bgm.lower_bounds_) >= -1e-9)
    means = bgm.means_[bgm.weights_ > 0.1]
    assert means.shape == (3, 2)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    assert np.abs(np.sort(means, axis=0) - np.sort(centres, axis=0)).max() < 0.5


def test_bad_chunks_are_refused_naming_the_problem(data):
    x, _ = data
    bgm = BayesianGaussianMixture(n_components=2, max_iter=2)
    once = (chunk for chunk in [x[:70], x[70:]])
    with pytest.raises(ValueError, match="can be read only once; pass a list of chunks"):
        bgm.fit(once)
    with pytest.raises(ValueError, match=r"chunk 1 has shape \(80, 3\); it must have shape"):
        bgm.fit([x[:70], np.ones((80, 3))])
    holed = x[70:].copy()
    holed[5, 0] = np.nan
    with pytest.raises(ValueError, match="chunk 1 contains NaN or infinity"):
        bgm.fit([x[:70], holed])
    with pytest.raises(ValueError, match="sample_weight applies to array data"):
        bgm.fit([x[:70], x[70:]], sample_weight=np.ones(150))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        BayesianGaussianMixture(n_components=5).fit([x[:2], x[2:4]])
    with pytest.raises(ValueError, match="'chunk_size' parameter"):
        BayesianGaussianMixture(chunk_size=0).fit(x)
    sizes = iter([150, 149])  # a callable whose data loses a row on the second pass

    def shrinking():
        return iter([x[: next(sizes)]])

    with pytest.raises(ValueError, match="The data changed between passes"):
        bgm.fit(shrinking)


# -- rows split over devices -----------------------------------------------------------------

_DEVICE_WORKER = """
import sys, warnings
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gaussmix import BayesianGaussianMixture
x, weight = np.load(sys.argv[1]), np.load(sys.argv[2])
out = {"device_count": len(jax.devices())}
for covariance_type, prior_type in (("full", "dirichlet_process"), ("spherical", "dirichlet_distribution")):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BayesianGaussianMixture(
            n_components=4, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
            max_iter=6, tol=0.0, n_init=2, random_state=0, devices=4,
        ).fit(x, sample_weight=weight)
    out[covariance_type + "_bounds"] = np.asarray(model.lower_bounds_)
    out[covariance_type + "_means"] = model.means_
    out[covariance_type + "_covariances"] = model.covariances_
np.savez(sys.argv[3], **out)
"""


@pytest.mark.slow
def test_four_devices_equal_the_in_memory_fit(data, tmp_path):
    """On four CPU devices (a fresh interpreter: XLA_FLAGS is read when JAX starts), 151
    weighted rows (padded to 4 x 38) give every iteration's bound and the posterior of the
    in-memory fit to 1e-10."""
    import os
    import subprocess
    import sys

    x, _ = data
    x = np.concatenate([x, x[:1] + 0.5])  # 151 rows: the last device's share is padded
    weight = np.random.default_rng(5).uniform(0.5, 2.0, len(x))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", weight)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    arguments = [str(tmp_path / name) for name in ("x.npy", "w.npy", "out.npz")]
    completed = subprocess.run(
        [sys.executable, "-c", _DEVICE_WORKER, *arguments], env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    assert int(out["device_count"]) == 4
    for covariance_type, prior_type in (
        ("full", "dirichlet_process"),
        ("spherical", "dirichlet_distribution"),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            memory = BayesianGaussianMixture(
                n_components=4,
                covariance_type=covariance_type,
                weight_concentration_prior_type=prior_type,
                max_iter=6,
                tol=0.0,
                n_init=2,
                random_state=0,
            ).fit(x, sample_weight=weight)
        np.testing.assert_allclose(
            out[f"{covariance_type}_bounds"], memory.lower_bounds_, rtol=1e-10, atol=0
        )
        for name in ("means", "covariances"):
            np.testing.assert_allclose(
                out[f"{covariance_type}_{name}"], getattr(memory, f"{name}_"), rtol=1e-10
            )


def test_one_device_and_bad_device_options(data):
    """devices=1 is the in-memory fit through the sharded program; more devices than
    exist, or devices with data read by chunks, are refused saying what to do."""
    import jax

    x, _ = data
    options = dict(n_components=N_COMPONENTS, max_iter=N_ITER, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = BayesianGaussianMixture(**options).fit(x)
        sharded = BayesianGaussianMixture(devices=1, **options).fit(x)
    np.testing.assert_allclose(sharded.lower_bounds_, memory.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(sharded.means_, memory.means_, rtol=1e-10, atol=1e-12)
    too_many = len(jax.devices()) + 1
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        BayesianGaussianMixture(devices=too_many, **options).fit(x)
    with pytest.raises(ValueError, match=r"is read by chunks; load it with np\.asarray"):
        BayesianGaussianMixture(devices=1, **options).fit([x[:70], x[70:]])

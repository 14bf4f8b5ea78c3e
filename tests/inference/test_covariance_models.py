"""mclust's 14 covariance models in the EM core, against independent references.

* Each M-step against a brute-force numerical maximization (scipy's BFGS from several
  starts) of the expected complete-data log-likelihood over the model's own
  parameterization :math:`\\Sigma_k = \\lambda_k D_k A_k D_k^T` (log volumes, log shapes
  with a zero sum, rotations by an angle in 2-D and the exponential map in 3-D): the
  M-step must reach the optimum, never a lower value.
* The constraint of the name on fitted covariances (equal volumes, shapes, orientations).
* EM's log-likelihood never decreases, for every model, under maximum likelihood and MAP.
* Nested models at their optima: a model never fits worse than one it contains.
* mclust's free-parameter counts, against a count from the three letters.
* In memory, by chunks and sharded: the same fit.
* Degenerate and hostile input: K = 1 and d = 1 (the constraints vanish: every model is
  its classic neighbour), float32, NaN, bad names, priors the models do not take.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy.linalg import expm
from scipy.optimize import minimize

from gaussmix.inference.em import fit_em, maximization_step
from gaussmix.inference.em.covariance_models import (
    COVARIANCE_MODELS,
    n_covariance_parameters,
)
from gaussmix.inference.em.maximization import n_parameters
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.inference.shard import fit_em_sharded
from gaussmix.inference.streaming import fit_em_chunked
from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    COVARIANCE_SITES,
    EM_COVARIANCE_TYPES,
    MCLUST_MODELS,
)

jax.config.update("jax_enable_x64", True)

NEW_MODELS = ("EII", "EEI", "VEI", "EVI", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV")
ALIASES = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}


# -- helpers ------------------------------------------------------------------------------


def full_covariances(covariances, covariance_type, n_components, n_features):
    """(K, D, D) from any layout."""
    c = np.asarray(covariances)
    layout = COVARIANCE_LAYOUTS[covariance_type]
    if layout == "full":
        return c
    if layout == "tied":
        return np.broadcast_to(c, (n_components, n_features, n_features))
    if layout == "diag":
        return np.stack([np.diag(row) for row in c])
    return np.stack([v * np.eye(n_features) for v in c])


def statistics_of(layout, sample_covariances, counts, centred_means):
    """Summed statistics whose scatter about ``centred_means`` is ``n_k S_k``."""
    second_full = counts[:, None, None] * (
        sample_covariances + centred_means[:, :, None] * centred_means[:, None, :]
    )
    second = {
        "full": second_full,
        "tied": second_full.sum(axis=0),
        "diag": np.diagonal(second_full, axis1=1, axis2=2),
        "spherical": np.trace(second_full, axis1=1, axis2=2),
    }[layout]
    return SufficientStatistics(
        jnp.asarray(counts),
        jnp.asarray(counts[:, None] * centred_means),
        jnp.asarray(second),
        jnp.zeros(()),
        jnp.asarray(counts.sum()),
    )


def objective(covariances, sample_covariances, counts):
    """:math:`\\sum_k n_k (\\log|\\Sigma_k| + \\operatorname{tr}(\\Sigma_k^{-1} S_k))`."""
    total = 0.0
    for c, s, n in zip(covariances, sample_covariances, counts, strict=True):
        sign, log_det = np.linalg.slogdet(c)
        if sign <= 0:
            return np.inf
        total += n * (log_det + np.trace(np.linalg.solve(c, s)))
    return total


def rotation(angles, n_features):
    """A rotation from d(d-1)/2 numbers: the Cayley transform :math:`(I - A)^{-1}(I + A)`
    of a skew-symmetric :math:`A` (every rotation without eigenvalue -1, a dense set;
    BFGS from several starts needs no more), the exponential map in 2-D."""
    skew = np.zeros((n_features, n_features))
    skew[np.triu_indices(n_features, 1)] = angles
    skew = skew - skew.T
    if n_features == 2:
        return expm(skew)
    identity = np.eye(n_features)
    return np.linalg.solve(identity - skew, identity + skew)


def model_covariances(theta, name, n_components, n_features):
    """Covariances of mclust's parameterization from free parameters ``theta``."""
    volume, shape, orientation = name
    n_angles = n_features * (n_features - 1) // 2
    sizes = {
        "volume": {"E": 1, "V": n_components}[volume],
        "shape": {"I": 0, "E": n_features - 1, "V": n_components * (n_features - 1)}[shape],
        "orientation": {"I": 0, "E": n_angles, "V": n_components * n_angles}[orientation],
    }
    total = sum(sizes.values())
    pieces = np.split(np.asarray(theta)[:total], np.cumsum(list(sizes.values()))[:-1])
    log_volumes = np.broadcast_to(pieces[0], n_components)
    if shape == "I":
        log_shapes = np.zeros((n_components, n_features))
    else:
        free = pieces[1].reshape(-1, n_features - 1)
        log_shapes = np.broadcast_to(
            np.concatenate([free, -free.sum(axis=1, keepdims=True)], axis=1),
            (n_components, n_features),
        )
    if orientation == "I":
        rotations = [np.eye(n_features)] * n_components
    else:
        angles = pieces[2].reshape(-1, n_angles)
        rotations = [rotation(a, n_features) for a in angles]
        rotations = rotations * n_components if len(rotations) == 1 else rotations
    return np.stack(
        [
            np.exp(v) * (r * np.exp(s)) @ r.T
            for v, s, r in zip(log_volumes, log_shapes, rotations, strict=True)
        ]
    ), sum(sizes.values())


def brute_force_optimum(name, sample_covariances, counts, n_starts, rng):
    """The best objective scipy's BFGS reaches over the model's parameters."""
    n_components, n_features = sample_covariances.shape[:2]
    _, size = model_covariances(np.zeros(1000), name, n_components, n_features)
    best = np.inf
    for _ in range(n_starts):
        start = rng.normal(scale=0.5, size=size)

        def loss(theta):
            covariances, _ = model_covariances(theta, name, n_components, n_features)
            return objective(covariances, sample_covariances, counts)

        result = minimize(loss, start, method="BFGS", options={"gtol": 1e-9, "maxiter": 5000})
        best = min(best, result.fun)
    return best


def random_problem(seed, n_components, n_features):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_components):
        a = rng.normal(size=(n_features, n_features + 3))
        samples.append(a @ a.T / (n_features + 3) * rng.uniform(0.3, 3.0))
    counts = rng.uniform(2.0, 20.0, n_components)
    means = rng.normal(size=(n_components, n_features))
    return np.stack(samples), counts, means


# -- (a) each M-step against brute force ----------------------------------------------------


@pytest.mark.parametrize("n_features", [2, 3])
@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_m_step_reaches_the_brute_force_optimum(name, n_features):
    n_components = 3
    sample_covariances, counts, means = random_problem(11 * n_features, n_components, n_features)
    layout = COVARIANCE_LAYOUTS[name]
    statistics = statistics_of(layout, sample_covariances, counts, means)
    parameters = maximization_step(
        statistics, covariance_type=name, centre=jnp.zeros(n_features), reg_covar=0.0
    )
    np.testing.assert_allclose(parameters.means, means, rtol=1e-12, atol=1e-12)
    ours = objective(
        full_covariances(parameters.covariances, name, n_components, n_features),
        sample_covariances,
        counts,
    )
    n_starts = 6 if n_features == 2 else 3
    reference = brute_force_optimum(
        name, sample_covariances, counts, n_starts, np.random.default_rng(n_features)
    )
    scale = counts.sum() * n_features
    assert ours <= reference + 1e-9 * scale, (name, ours, reference)  # never lower
    assert ours >= reference - 1e-6 * scale, (name, ours, reference)  # scipy got there


@pytest.mark.parametrize("name", ["VEI", "VEE", "EVE", "VVE", "VEV"])
def test_iterative_m_step_warm_start_changes_nothing_at_the_optimum(name):
    """Started from its own optimum (the previous step's covariances), an iterative
    M-step stays there; started from a poor point it still reaches it."""
    n_components, n_features = 3, 3
    sample_covariances, counts, means = random_problem(5, n_components, n_features)
    layout = COVARIANCE_LAYOUTS[name]
    statistics = statistics_of(layout, sample_covariances, counts, means)
    cold = maximization_step(
        statistics, covariance_type=name, centre=jnp.zeros(n_features), reg_covar=0.0
    ).covariances
    warm = maximization_step(
        statistics,
        covariance_type=name,
        centre=jnp.zeros(n_features),
        reg_covar=0.0,
        previous=cold,
    ).covariances
    np.testing.assert_allclose(warm, cold, rtol=1e-6, atol=1e-7)
    rough = COVARIANCE_MODELS[name].covariance_fn  # a poor, valid start: the identity
    start = (
        jnp.ones((n_components, n_features))
        if layout == "diag"
        else jnp.stack([jnp.eye(n_features)] * n_components)
    )
    sample = (
        jnp.asarray(np.diagonal(sample_covariances, axis1=1, axis2=2))
        if layout == "diag"
        else jnp.asarray(sample_covariances)
    )
    from_identity = rough(sample, jnp.asarray(counts), start)
    np.testing.assert_allclose(from_identity, cold, rtol=1e-6, atol=1e-7)


# -- (b) constraints hold on fits ----------------------------------------------------------


def three_clusters(seed=0, n=60, n_features=3, spacing=5.0):
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(3):
        mixing = rng.normal(size=(n_features, n_features)) * 0.7 + np.eye(n_features)
        parts.append(rng.normal(size=(n, n_features)) @ mixing + spacing * k)
    return np.concatenate(parts)


def decompose(covariance):
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = values[::-1], vectors[:, ::-1]
    volume = np.exp(np.mean(np.log(values)))
    return volume, values / volume, vectors


def assert_constraint(name, covariances):
    volume, shape, orientation = name
    parts = [decompose(c) for c in covariances]
    volumes = np.array([p[0] for p in parts])
    shapes = np.array([p[1] for p in parts])
    if volume == "E":
        np.testing.assert_allclose(volumes, volumes[0], rtol=1e-8, err_msg=f"{name}: volumes")
    else:
        assert np.ptp(volumes) > 1e-6 * volumes.mean(), f"{name}: volumes vary"
    if shape == "I":
        np.testing.assert_allclose(shapes, 1.0, rtol=1e-8, err_msg=f"{name}: spherical")
    if orientation == "I":
        off_diagonal = covariances - np.stack([np.diag(np.diag(c)) for c in covariances])
        assert np.abs(off_diagonal).max() == 0.0, f"{name}: axis-aligned"
    if orientation == "E":  # one orientation: the covariances commute
        for a, b in itertools.combinations(covariances, 2):
            np.testing.assert_allclose(a @ b, b @ a, atol=1e-8 * np.abs(a @ b).max())
    if shape == "E" and orientation != "I":
        np.testing.assert_allclose(
            shapes, shapes[[0] * len(shapes)], rtol=1e-7, err_msg=f"{name}: shapes"
        )
    if shape == "E" and orientation == "I":  # one diagonal up to volume
        diagonals = np.array([np.diag(c) for c in covariances]) / volumes[:, None]
        np.testing.assert_allclose(
            diagonals, diagonals[[0] * len(diagonals)], rtol=1e-8, err_msg=f"{name}"
        )


@pytest.fixture(scope="module")
def fits():
    x = three_clusters()
    return x, {
        name: fit_em(x, n_components=3, covariance_type=name, n_init=2, max_iter=300, tol=1e-9)
        for name in MCLUST_MODELS
    }


@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_fitted_covariances_obey_the_model(fits, name):
    x, results = fits
    result = results[name]
    covariances = full_covariances(result.params[COVARIANCE_SITES[name]], name, 3, x.shape[1])
    assert_constraint(name, covariances)


# -- (c) EM never decreases the log-likelihood -----------------------------------------------


@pytest.mark.parametrize("priors", [None, "default"])
@pytest.mark.parametrize("name", NEW_MODELS)
def test_em_lower_bound_never_decreases(name, priors):
    x = three_clusters(seed=3, n=40, spacing=2.0)  # overlapping: many EM steps
    result = fit_em(x, n_components=3, covariance_type=name, priors=priors, max_iter=200, tol=1e-10)
    bounds = np.asarray(result.lower_bounds)[: int(result.n_iter)]
    assert int(result.n_iter) > 3
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:])), (name, np.diff(bounds).min())


# -- (d) nested models -------------------------------------------------------------------------

#: (special case, general model): every direct inclusion among the 14.
NESTED = [
    ("EII", "VII"), ("EII", "EEI"), ("VII", "VEI"), ("EEI", "VEI"), ("EEI", "EVI"),
    ("EEI", "EEE"), ("VEI", "VVI"), ("VEI", "VEE"), ("EVI", "VVI"), ("EVI", "EVE"),
    ("VVI", "VVE"), ("EEE", "VEE"), ("EEE", "EVE"), ("EEE", "EEV"), ("VEE", "VVE"),
    ("VEE", "VEV"), ("EVE", "VVE"), ("EVE", "EVV"), ("VVE", "VVV"), ("EEV", "VEV"),
    ("EEV", "EVV"), ("VEV", "VVV"), ("EVV", "VVV"),
]  # fmt: skip


def test_a_model_fits_at_least_as_well_as_one_it_contains(fits):
    """On well separated clusters (one optimum per model), log L of the general model
    at its optimum is at least the special case's."""
    x, results = fits
    n = x.shape[0]
    log_likelihood = {name: float(r.lower_bound) * n for name, r in results.items()}
    for special, general in NESTED:
        assert log_likelihood[general] >= log_likelihood[special] - 1e-6, (
            special,
            general,
            log_likelihood[special],
            log_likelihood[general],
        )
    # and the constraints matter on these data: the most and least general differ
    assert log_likelihood["VVV"] > log_likelihood["EII"] + 10


# -- (e) free parameters -----------------------------------------------------------------------


def letters_count(name, k, d):
    """Free covariance parameters from the three letters (volume, shape, orientation)."""
    volume, shape, orientation = name
    per = {"I": 0, "E": 1, "V": k}
    return (
        per[volume] * 1
        + per[shape] * (d - 1)
        + {"I": 0, "E": 1, "V": k}[orientation] * d * (d - 1) // 2
    )


#: Scrucca et al. (2016), Table 1, for G = 3 components in d = 4 dimensions.
MCLUST_TABLE_G3_D4 = {
    "EII": 1, "VII": 3, "EEI": 4, "VEI": 6, "EVI": 10, "VVI": 12, "EEE": 10,
    "VEE": 12, "EVE": 16, "VVE": 18, "EEV": 22, "VEV": 24, "EVV": 28, "VVV": 30,
}  # fmt: skip


@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_free_parameters_are_mclusts(name):
    assert n_covariance_parameters(name, 3, 4) == MCLUST_TABLE_G3_D4[name]
    for k, d in itertools.product([1, 2, 5], [1, 2, 3, 6]):
        assert n_covariance_parameters(name, k, d) == letters_count(name, k, d), (name, k, d)
        assert n_parameters(name, k, d) == letters_count(name, k, d) + k * d + k - 1
    if name in ALIASES:
        for k, d in itertools.product([1, 4], [1, 3]):
            assert n_parameters(name, k, d) == n_parameters(ALIASES[name], k, d)


# -- (f) execution modes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["EII", "VEI", "EVE", "VEV"])
def test_every_execution_mode_gives_the_same_fit(name):
    x = three_clusters(seed=5, n=67, n_features=2)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, x.shape[0])
    start = fit_em(x, n_components=3, covariance_type=name, max_iter=0)
    layout = COVARIANCE_LAYOUTS[name]
    factor = np.asarray(start.precisions_cholesky)
    precisions = factor @ np.swapaxes(factor, -1, -2) if layout in ("full", "tied") else factor**2
    options = dict(
        n_components=3,
        covariance_type=name,
        tol=1e-8,
        max_iter=300,
        weights_init=np.asarray(start.params["weights"]),
        means_init=np.asarray(start.params["means"]),
        precisions_init=precisions,
        sample_weight=weight,
    )
    site = COVARIANCE_SITES[name]
    memory = fit_em(x, **options)
    chunks = fit_em_chunked(x, chunk_rows=50, **options)
    sharded = fit_em_sharded(x, devices=1, **options)
    assert int(memory.n_iter) > 2
    for other in (chunks, sharded):
        assert int(other.n_iter) == int(memory.n_iter)
        for key in ("weights", "means", site):
            np.testing.assert_allclose(other.params[key], memory.params[key], atol=1e-9)
        np.testing.assert_allclose(other.lower_bound, memory.lower_bound, atol=1e-10)


# -- (g) degenerate cases and bad input --------------------------------------------------------


@pytest.mark.parametrize("priors", [None, "default"])
def test_one_component_every_model_is_its_unconstrained_neighbour(priors):
    """With K = 1 the constraints between components vanish: a full-layout model is VVV,
    a diagonal one VVI, EII is VII (maximum likelihood and MAP)."""
    x = three_clusters(seed=2, n=30)
    classic = {
        layout: fit_em(x, n_components=1, covariance_type=layout, priors=priors)
        for layout in ("full", "diag", "spherical")
    }
    for name in NEW_MODELS:
        result = fit_em(x, n_components=1, covariance_type=name, priors=priors)
        reference = classic[COVARIANCE_LAYOUTS[name]]
        site = COVARIANCE_SITES[name]
        np.testing.assert_allclose(
            result.params[site], reference.params[site], rtol=1e-8, err_msg=name
        )


def test_one_feature_every_model_is_e_or_v():
    """In one dimension mclust has E and V only: every name whose volume is Equal fits
    EII's model, every Variable one VII's."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, 60), rng.normal(6, 2, 90)])[:, None]
    results = {
        name: fit_em(x, n_components=2, covariance_type=name, tol=1e-10, max_iter=500)
        for name in MCLUST_MODELS
    }
    for name, result in results.items():
        reference = results["EII" if name[0] == "E" else "VII"]
        got = full_covariances(result.params[COVARIANCE_SITES[name]], name, 2, 1).ravel()
        want = full_covariances(reference.params["variances"], "EII", 2, 1).ravel()
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(result.lower_bound, reference.lower_bound, rtol=1e-9)


@pytest.mark.parametrize("name", ["EEI", "EVE", "VEV", "EVV"])
def test_float32_fits_finite_and_close_to_float64(name):
    x = three_clusters(seed=6, n=50)
    x = (x - x.mean(0)) / x.std(0)
    r64 = fit_em(x, n_components=3, covariance_type=name, max_iter=200, tol=1e-10)
    factor = np.asarray(r64.precisions_cholesky)
    layout = COVARIANCE_LAYOUTS[name]
    precisions = factor @ np.swapaxes(factor, -1, -2) if layout == "full" else factor**2
    start = {  # at float64's optimum: float32 must stay there, finite
        "weights_init": np.asarray(r64.params["weights"], np.float32),
        "means_init": np.asarray(r64.params["means"], np.float32),
        "precisions_init": precisions.astype(np.float32),
    }
    r32 = fit_em(
        x.astype(np.float32), n_components=3, covariance_type=name, max_iter=200, tol=1e-6, **start
    )
    site = COVARIANCE_SITES[name]
    assert r32.params[site].dtype == np.float32
    assert np.all(np.isfinite(r32.params[site]))
    np.testing.assert_allclose(r32.lower_bound, r64.lower_bound, rtol=1e-4)


def test_bad_names_and_data_are_refused_clearly():
    x = three_clusters(n=10)
    with pytest.raises(ValueError, match=r"'covariance_type' should be in .*EVE"):
        fit_em(x, n_components=2, covariance_type="EVX")
    with pytest.raises(ValueError, match="'covariance_type' should be in"):
        fit_em(x, n_components=2, covariance_type="eve")
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_em(bad, n_components=2, covariance_type="EVE")


def test_priors_the_models_do_not_take_are_refused():
    x = three_clusters(n=10)
    with pytest.raises(NotImplementedError, match="conjugate priors only"):
        fit_em(
            x,
            n_components=2,
            covariance_type="VEI",
            priors={"variances": dist.LogNormal(0.0, 1.0)},
        )
    with pytest.raises(ValueError, match="one InverseGamma concentration per component"):
        fit_em(
            x,
            n_components=2,
            covariance_type="EEI",
            priors={"variances": dist.InverseGamma(jnp.array([2.0, 3.0, 4.0]), 1.0)},
        )


@pytest.mark.parametrize("name", EM_COVARIANCE_TYPES + tuple(ALIASES))
def test_the_program_has_every_model_with_its_layouts_covariance_site(name):
    """The NumPyro program (and so NUTS) takes each of the 14 models and the classic
    four; the covariance each draw implies is the storage layout's site and shape."""
    from numpyro import handlers

    from gaussmix.models.mixture import gaussian_mixture

    K, D = 3, 2
    shapes = {"spherical": (K,), "diag": (K, D), "tied": (D, D), "full": (K, D, D)}

    def site_shapes():
        program = handlers.seed(gaussian_mixture, 0)
        trace = handlers.trace(program).get_trace(
            np.zeros((5, D)), n_components=K, covariance_type=name
        )
        return {site: value["value"] for site, value in trace.items() if "value" in value}

    values = jax.eval_shape(site_shapes)  # traced abstractly: nothing compiled
    site = COVARIANCE_SITES[name]
    assert values[site].shape == shapes[COVARIANCE_LAYOUTS[name]]
    assert values["means"].shape == (K, D)


def test_a_collapsing_component_is_a_clear_error():
    """Two identical points and no regularization: a variable-volume component collapses
    (VEV), named in the error with its remedy."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(40, 2)), np.full((2, 2), 9.0)])
    means = np.array([[0.0, 0.0], [9.0, 9.0]])
    with pytest.raises(ValueError, match="increase reg_covar"):
        fit_em(x, n_components=2, covariance_type="VEV", reg_covar=0.0, means_init=means)
    # an equal-volume model cannot collapse one component alone
    result = fit_em(x, n_components=2, covariance_type="EEV", reg_covar=0.0, means_init=means)
    assert np.all(np.isfinite(result.params["covariances"]))


def test_free_parameters_equal_mclusts_own_table():
    """mclust 6.0's ``nMclustParams`` on iris (d = 4, G = 1..9), from
    scripts/mclust_reference.R's references."""
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "references" / "mclust" / "iris.json"
    if not path.exists():
        pytest.skip(f"mclust's references are absent ({path})")
    reference = json.loads(path.read_text())
    for i, k in enumerate(reference["G"]):
        for j, name in enumerate(reference["models"]):
            assert n_parameters(name, k, reference["d"]) == reference["n_parameters"][i][j]


@pytest.mark.parametrize("name", ["VEI", "EVE"])
def test_a_batch_of_datasets_is_each_dataset_alone(name):
    """Vmapped datasets (the iterative M-step's while_loop inside vmap) fit as alone."""
    batch = np.stack([three_clusters(seed=s, n=30, spacing=3.0) for s in (8, 9)])
    layout = COVARIANCE_LAYOUTS[name]
    inits = []
    for b in range(2):  # one start per dataset, given: no random stream differs
        start = fit_em(batch[b], n_components=3, covariance_type=name, max_iter=0)
        factor = np.asarray(start.precisions_cholesky)
        precisions = factor @ np.swapaxes(factor, -1, -2) if layout == "full" else factor**2
        inits.append(
            (np.asarray(start.params["weights"]), np.asarray(start.params["means"]), precisions)
        )
    options = dict(n_components=3, covariance_type=name, tol=1e-8, max_iter=200)
    weights, means, precisions = (np.stack(a) for a in zip(*inits, strict=True))
    together = fit_em(
        batch, weights_init=weights, means_init=means, precisions_init=precisions, **options
    )
    site = COVARIANCE_SITES[name]
    for b in range(2):
        w, m, p = inits[b]
        alone = fit_em(batch[b], weights_init=w, means_init=m, precisions_init=p, **options)
        np.testing.assert_allclose(together.params[site][b], alone.params[site], atol=1e-7)
        np.testing.assert_allclose(together.lower_bound[b], alone.lower_bound, atol=1e-9)

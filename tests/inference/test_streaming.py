"""Out-of-core EM: exact EM over chunks equals in-memory EM (1e-10 in float64) from every
kind of source; online EM reaches the batch answer within its Monte Carlo error; bad
input is refused with a message that says what to do."""

import numpy as np
import numpyro.distributions as dist
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from gaussmix.inference import em
from gaussmix.inference.streaming import (
    ChunkSource,
    fit_em_chunked,
    fit_em_online,
    online_em_continue,
    online_em_start,
    online_em_step,
    step_size,
)

#: Exact EM by chunks differs from in-memory EM only in the order of float64 sums.
EXACT = 1e-10


@pytest.fixture(scope="module")
def data():
    """2103 points of three 3-D clusters (the same data as test_shard / test_multiprocess,
    so that the compiled reference fits are shared), and positive weights."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, s, (701, 3)) for m, s in ((-3, 1.0), (0, 0.5), (4, 1.5))])
    rng.shuffle(x)
    return x, rng.uniform(0.5, 2.0, x.shape[0])


OPTIONS = {
    "full": {"n_components": 3, "covariance_type": "full", "tol": 1e-8, "max_iter": 200},
    "diag": {"n_components": 3, "covariance_type": "diag", "tol": 1e-8, "max_iter": 200},
}


def assert_same_fit(result, reference):
    assert set(result.params) == set(reference.params)
    for name, value in reference.params.items():
        np.testing.assert_allclose(result.params[name], value, rtol=0, atol=EXACT, err_msg=name)
    np.testing.assert_allclose(
        result.precisions_cholesky, reference.precisions_cholesky, rtol=EXACT, atol=EXACT
    )
    assert abs(float(result.lower_bound) - float(reference.lower_bound)) < EXACT
    assert int(result.n_iter) == int(reference.n_iter) > 1
    assert bool(result.converged) == bool(reference.converged)
    np.testing.assert_allclose(result.lower_bounds, reference.lower_bounds, rtol=0, atol=EXACT)
    assert result.method == reference.method


def sources(kind, x, w, directory):
    """(data, sample_weight) of one kind for fit_em_chunked; chunks do not divide N."""
    if kind == "memmap":
        np.save(directory / "x.npy", x)
        np.save(directory / "w.npy", w)
        return np.load(directory / "x.npy", mmap_mode="r"), np.load(
            directory / "w.npy", mmap_mode="r"
        )
    if kind == "path":
        np.save(directory / "x.npy", x)
        return str(directory / "x.npy"), None
    if kind == "tuples":
        return [(x[i : i + 500], w[i : i + 500]) for i in range(0, x.shape[0], 500)], None
    return (lambda: (x[i : i + 333] for i in range(0, x.shape[0], 333))), None


@pytest.mark.parametrize(
    ("kind", "covariance_type", "priors", "weighted"),
    [
        ("memmap", "full", None, True),
        ("tuples", "full", None, True),
        ("path", "diag", "default", False),
        ("callable", "diag", "default", False),
    ],
)
def test_exact_em_over_chunks_equals_in_memory_em(
    tmp_path, data, kind, covariance_type, priors, weighted
):
    x, w = data
    weight = w if weighted else None
    reference = em.fit_em(x, priors=priors, sample_weight=weight, **OPTIONS[covariance_type])
    chunks, chunk_weight = sources(kind, x, w if weighted else None, tmp_path)
    result = fit_em_chunked(
        chunks, priors=priors, sample_weight=chunk_weight, chunk_rows=400,
        **OPTIONS[covariance_type],
    )  # fmt: skip
    assert_same_fit(result, reference)


def poor_start(x, n_components=3):
    """A deliberately poor but valid start (three rows as means, precisions 0.3 I), so that
    EM runs many iterations; shared with scikit-learn."""
    rng = np.random.default_rng(2)
    n_features = x.shape[1]
    return {
        "weights_init": np.full(n_components, 1.0 / n_components),
        "means_init": x[rng.choice(x.shape[0], n_components, replace=False)],
        "precisions_init": np.stack([0.3 * np.eye(n_features)] * n_components),
    }


def test_exact_em_over_chunks_is_scikit_learns_em(data):
    """Chunked EM (six chunks, the last one short) against scikit-learn's GaussianMixture
    from the same start, float64, at every iteration. Both run the same EM; they differ in
    the order of the sums over 2103 rows (here: per chunk, then across chunks, about a
    centre), sqrt(N) eps ~ 1e-14 relative per iteration, compounded over the iterations
    by EM's contraction (< 1) over 11 iterations. Measured: lower bounds 6.7e-16
    relative, parameters 1.8e-14 absolute (values of order 1 to 10). Tolerances: 1e-13
    relative on the lower bounds (the sqrt(N) eps bound with a 10x margin), 2e-13
    absolute on the parameters (10x the measured)."""
    x, _ = data
    options = {**OPTIONS["full"], "tol": 1e-8}
    start = poor_start(x)
    result = fit_em_chunked(x, chunk_rows=400, **start, **options)
    reference = SklearnGaussianMixture(
        3, covariance_type="full", tol=options["tol"], max_iter=options["max_iter"], **start
    ).fit(x)
    assert reference.converged_ and bool(result.converged)
    assert int(result.n_iter) == reference.n_iter_ > 5
    n_iter = reference.n_iter_
    np.testing.assert_allclose(
        np.asarray(result.lower_bounds)[:n_iter], reference.lower_bounds_, rtol=1e-13
    )
    np.testing.assert_allclose(float(result.lower_bound), reference.lower_bound_, rtol=1e-13)
    for name, attribute in (
        ("weights", "weights_"),
        ("means", "means_"),
        ("covariances", "covariances_"),
    ):
        np.testing.assert_allclose(
            result.params[name], getattr(reference, attribute), rtol=0, atol=2e-13,
            err_msg=name,
        )  # fmt: skip
    np.testing.assert_allclose(
        result.precisions_cholesky, reference.precisions_cholesky_, rtol=0, atol=2e-13
    )


def test_more_restarts_only_raise_the_lower_bound(data):
    x, w = data
    one = fit_em_chunked(x, sample_weight=w, chunk_rows=400, **OPTIONS["full"])
    three = fit_em_chunked(x, sample_weight=w, chunk_rows=400, n_init=3, **OPTIONS["full"])
    assert float(three.lower_bound) >= float(one.lower_bound) - EXACT


def test_initialization_on_a_sample_still_finds_the_clusters(data):
    """With fewer init_rows than rows the start comes from a sample; EM on all rows then
    reaches the same maximum as in-memory EM (to its convergence tolerance)."""
    x, w = data
    reference = em.fit_em(x, sample_weight=w, **OPTIONS["full"])
    result = fit_em_chunked(x, sample_weight=w, init_rows=300, chunk_rows=400, **OPTIONS["full"])
    order = np.argsort(np.asarray(reference.params["means"])[:, 0])
    found = np.argsort(np.asarray(result.params["means"])[:, 0])
    np.testing.assert_allclose(
        np.asarray(result.params["means"])[found],
        np.asarray(reference.params["means"])[order],
        atol=1e-3,
    )
    assert float(result.lower_bound) == pytest.approx(float(reference.lower_bound), abs=1e-6)


def test_chunk_source_reads_memmap_in_bounded_chunks(tmp_path):
    x = np.arange(30.0).reshape(15, 2)
    np.save(tmp_path / "x.npy", x)
    source = ChunkSource(str(tmp_path / "x.npy"), chunk_rows=4)
    chunks = [chunk for chunk, _ in source]
    assert [c.shape[0] for c in chunks] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    assert [c.shape[0] for c, _ in source] == [4, 4, 4, 3]  # read again: a fresh pass


# ---------------------------------------------------------------------------------------
# Online EM


def chunk_weights(n_chunks: int, learning_decay: float, learning_offset: float) -> np.ndarray:
    """Weight of each chunk's statistics in the running average after the last update:
    a_0 = prod (1 - rho_j), a_t = rho_t prod_{j > t} (1 - rho_j)."""
    rho = (np.arange(1, n_chunks) + learning_offset) ** (-learning_decay)
    keep = np.append(np.cumprod((1 - rho)[::-1])[::-1], 1.0)  # prod_{j > t}, t = 0..T
    return np.concatenate([[1.0], rho]) * keep


def test_online_em_one_pass_reaches_the_truth_within_monte_carlo_error():
    """The running statistics are a weighted average of chunk statistics (weights a_t of
    the step sizes), so the error of each estimate is about sqrt(sum a_t^2 / n) times the
    per-point standard deviation; six of those bound it."""
    rng = np.random.default_rng(3)
    n_chunks, chunk_rows = 60, 1000
    weights, means, scale = np.array([0.3, 0.7]), np.array([[-4.0, 0.0], [3.0, 1.0]]), 1.0
    labels = rng.choice(2, n_chunks * chunk_rows, p=weights)
    x = means[labels] + scale * rng.standard_normal((labels.size, 2))
    decay, offset = 0.7, 10.0
    result = fit_em_online(
        (x[i : i + chunk_rows] for i in range(0, x.shape[0], chunk_rows)),
        n_components=2,
        covariance_type="diag",
        learning_decay=decay,
        learning_offset=offset,
    )
    assert int(result.n_iter) == n_chunks - 1
    effective = np.sum(chunk_weights(n_chunks, decay, offset) ** 2) / chunk_rows
    order = np.argsort(np.asarray(result.params["means"])[:, 0])
    found = {name: np.asarray(value)[order] for name, value in result.params.items()}
    per_component = np.sqrt(effective / weights)[:, None] * np.ones((1, 2))
    np.testing.assert_array_less(np.abs(found["means"] - means), 6 * per_component * scale)
    np.testing.assert_array_less(
        np.abs(found["variances"] - scale**2), 6 * np.sqrt(2) * per_component * scale**2
    )
    np.testing.assert_array_less(
        np.abs(found["weights"] - weights), 6 * np.sqrt(effective * weights * (1 - weights))
    )


def test_online_step_is_the_running_average_of_chunk_statistics():
    """With learning_decay 1 and learning_offset 0, rho_1 = 1: the first update forgets
    the start, so s_1 is the statistics of the new chunk alone."""
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=(64, 2)), rng.normal(2.0, 1.0, size=(64, 2))
    variances = first.var(axis=0)[None]
    parameters = em.MixtureParameters(
        np.ones(1), first.mean(axis=0)[None], variances, 1 / np.sqrt(variances)
    )
    state = online_em_start(first, parameters, covariance_type="diag")
    state = online_em_step(
        state, second, covariance_type="diag", learning_decay=1.0, learning_offset=0.0,
        reg_covar=0.0,
    )  # fmt: skip
    # One component: the M-step of chunk 2's statistics is its mean and variance.
    np.testing.assert_allclose(state.parameters.means[0], second.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(state.parameters.covariances[0], second.var(axis=0), rtol=1e-9)
    assert float(step_size(1, 1.0, 0.0)) == 1.0
    assert float(step_size(3, 0.5 + 1e-9, 1.0)) == pytest.approx(4 ** -(0.5 + 1e-9))


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_refused_with_a_fix(tmp_path, data):
    x, w = data
    options = OPTIONS["diag"]
    with pytest.raises(ValueError, match="read only once"):
        fit_em_chunked((chunk for chunk in [x]), **options)
    bad = x.copy()
    bad[700, 1] = np.nan
    with pytest.raises(ValueError, match="chunk 1 contains NaN"):
        fit_em_chunked([bad[:500], bad[500:]], **options)
    with pytest.raises(ValueError, match=r"chunk 1 has shape \(3, 2\)"):
        fit_em_chunked([x[:5], x[5:8, :2]], **options)
    with pytest.raises(ValueError, match=r"not a \.npy file"):
        fit_em_chunked(str(tmp_path / "x.csv"), **options)
    with pytest.raises(ValueError, match="does not exist"):
        fit_em_chunked(str(tmp_path / "missing.npy"), **options)
    with pytest.raises(ValueError, match=r"\(x, w\) tuples"):
        fit_em_chunked([x], sample_weight=w, **options)
    with pytest.raises(ValueError, match="one weight per row"):
        fit_em_chunked(x, sample_weight=w[:-1], **options)
    with pytest.raises(ValueError, match="non-negative"):
        fit_em_chunked([(x, -w)], **options)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        fit_em_chunked([x[:2]], **options)
    with pytest.raises(ValueError, match="learning_decay must be in"):
        fit_em_online([x], learning_decay=0.5, **options)
    with pytest.raises(ValueError, match="chunk_rows must be an int"):
        fit_em_chunked(x, chunk_rows=0, **options)
    # A weights prior of the wrong size is named before any chunk is read (it used to
    # fail deep inside the M-step with a broadcasting error).
    wrong_size = {"weights": dist.Dirichlet(np.ones(options["n_components"] + 1))}
    with pytest.raises(ValueError, match=r"priors\['weights'\] has event shape"):
        fit_em_chunked([x], **{**options, "priors": wrong_size})
    with pytest.raises(ValueError, match=r"priors\['weights'\] has event shape"):
        fit_em_online([x], **{**options, "priors": wrong_size})


def test_data_that_changes_between_passes_is_refused(data):
    x, _ = data
    calls = []

    def chunks():
        calls.append(None)
        stop = x.shape[0] if len(calls) == 1 else x.shape[0] - 10
        return (x[i : min(i + 500, stop)] for i in range(0, stop, 500))

    with pytest.raises(ValueError, match="changed between passes"):
        fit_em_chunked(chunks, **OPTIONS["full"])


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_continuing_a_fit_a_chunk_moves_the_model_by_its_share(data, covariance_type):
    """online_em_continue holds statistics whose M-step is the fitted model: a chunk of
    zero weight leaves it unchanged, and a chunk of weight w after data of weight W moves
    the weights by w / (W + w) of the way to the chunk's own."""
    x, _ = data
    result = em.fit_em(x, n_components=3, covariance_type=covariance_type)
    parameters = em.MixtureParameters(
        result.params["weights"],
        result.params["means"],
        result.params[
            {"full": "covariances", "tied": "covariance"}.get(covariance_type, "variances")
        ],
        result.precisions_cholesky,
    )
    state = online_em_continue(
        parameters, total_weight=float(x.shape[0]), covariance_type=covariance_type
    )
    chunk = x[:4]
    unchanged = online_em_step(
        state, chunk, covariance_type=covariance_type, sample_weight=np.zeros(4)
    )
    for got, want in zip(unchanged.parameters, parameters, strict=True):
        # the M-step of the inverted M-step: float64 rounding of a few operations
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    moved = online_em_step(state, chunk, covariance_type=covariance_type)
    _, log_resp = em.log_responsibilities(
        chunk, *parameters[:2], parameters.precisions_cholesky, covariance_type
    )
    share = 4 / (x.shape[0] + 4)
    expected = (1 - share) * np.asarray(parameters.weights) + share * np.exp(log_resp).mean(0)
    np.testing.assert_allclose(moved.parameters.weights, expected, rtol=1e-12)
    assert bool(moved.incremental) and float(moved.total_weight) == x.shape[0] + 4


def test_chunked_deconvolution_with_background_and_nan_equals_in_memory(tmp_path):
    """Extreme deconvolution over chunks (x and its (N, D) error variances as .npy files
    read side by side) with a uniform background and missing entries: the same EM as
    fit_em in memory, to 1e-10 (tied covariances, 20 iterations from one given start)."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(-2.0, 1.0, (120, 2)), rng.normal(3.0, 0.7, (120, 2))])
    variances = rng.uniform(0.05, 0.6, x.shape)
    x[::9, 0] = np.nan
    log_sides = np.log(np.nanmax(x, axis=0) - np.nanmin(x, axis=0))
    options = {
        "n_components": 2,
        "covariance_type": "tied",
        "max_iter": 20,
        "tol": 0.0,
        "means_init": np.array([[-1.0, -1.0], [1.0, 1.0]]),
        "background_log_density": -float(log_sides.sum()),
        "background_log_sides": log_sides,
    }
    reference = em.fit_em(x, measurement_covariances=variances, nan_policy="marginalize", **options)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "s.npy", variances)
    result = fit_em_chunked(
        str(tmp_path / "x.npy"),
        measurement_covariances=str(tmp_path / "s.npy"),
        chunk_rows=70,
        nan_policy="marginalize",
        **options,
    )
    np.testing.assert_allclose(result.lower_bounds, reference.lower_bounds, rtol=EXACT)
    for name in reference.params:
        np.testing.assert_allclose(
            result.params[name], reference.params[name], rtol=EXACT, atol=EXACT
        )
    assert float(result.background_weight) == pytest.approx(
        float(reference.background_weight), rel=EXACT
    )


def test_online_em_takes_chunks_with_their_errors():
    """fit_em_online reads (x, w, s) chunks: one chunk is the in-memory deconvolution fit
    of it; a chunk without s among chunks with s is refused, naming it."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 2))
    variances = rng.uniform(0.1, 0.5, x.shape)
    options = {"n_components": 1, "covariance_type": "diag", "tol": 1e-8}
    single = fit_em_online([(x, None, variances)], **options)
    reference = em.fit_em(x, measurement_covariances=variances, **options)
    np.testing.assert_allclose(single.params["variances"], reference.params["variances"])
    assert np.all(single.params["variances"] < np.var(x, axis=0))  # deconvolved
    with pytest.raises(ValueError, match="chunk 1 does not carry measurement covariances"):
        fit_em_online([(x, None, variances), (x, None)], **options)
    with pytest.raises(ValueError, match=r"chunk 1 has shape \(79, 2\), but the chunk has 80"):
        fit_em_online([(x, None, variances), (x, None, variances[1:])], **options)

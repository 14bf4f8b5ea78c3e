"""GaussianMixture past one machine's memory or one device.

- ``fit`` on an ``np.memmap``, a ``.npy`` path, a list of chunks, a callable of chunks or
  with ``chunk_size`` equals the in-memory fit from the same start to 1e-10 in float64
  (exact EM: only the order of the sums differs).
- ``partial_fit`` is online EM: it equals ``streaming.online_em_start`` /
  ``online_em_step`` driven by hand, and one pass over chunks reaches the truth within
  its Monte Carlo error.
- ``devices=`` (a count, a device list, a mesh) on 4 forced CPU devices equals the
  one-device fit to 1e-10: checked in tests/inference/test_shard.py, whose one
  subprocess with 4 devices fits the estimator next to fit_em_sharded on the same data.
- Bad input is refused with a message that says what to do; `clone` shares devices.
"""

import pickle
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from gaussmix import GaussianMixture
from gaussmix.inference import em, streaming
from gaussmix.io import load, save

EXACT = 1e-10
#: Options of the exact fits; the data and options of tests/inference/test_streaming.py,
#: so that a full run shares their compiled programs.
OPTIONS = {
    "n_components": 3,
    "covariance_type": "full",
    "tol": 1e-8,
    "max_iter": 200,
    "random_state": 0,
}
ARRAY_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "lower_bounds_",
)
CHUNK_ROWS = 400


@pytest.fixture(scope="module")
def data():
    """2103 rows (not a multiple of the chunk size) of three 3-D clusters, and weights."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, s, (701, 3)) for m, s in ((-3, 1.0), (0, 0.5), (4, 1.5))])
    rng.shuffle(x)
    return x, rng.uniform(0.5, 2.0, x.shape[0])


@pytest.fixture(scope="module")
def in_memory(data):
    x, w = data
    return GaussianMixture(**OPTIONS).fit(x, sample_weight=w)


def assert_same_fit(attributes: dict, reference: GaussianMixture) -> None:
    """``attributes``: name -> value of a fit; equal to ``reference``'s to 1e-10."""
    for name in ARRAY_ATTRIBUTES:
        np.testing.assert_allclose(
            attributes[name], getattr(reference, name), rtol=0, atol=EXACT, err_msg=name
        )
    assert abs(float(attributes["lower_bound_"]) - reference.lower_bound_) < EXACT
    assert int(attributes["n_iter_"]) == reference.n_iter_ > 1
    assert bool(attributes["converged_"]) == reference.converged_
    assert int(attributes["n_features_in_"]) == reference.n_features_in_


def attributes_of(model: GaussianMixture) -> dict:
    names = (*ARRAY_ATTRIBUTES, "lower_bound_", "n_iter_", "converged_", "n_features_in_")
    return {name: getattr(model, name) for name in names}


def chunked_source(kind: str, x, w, directory: Path):
    """(X, sample_weight, chunk_size) for fit, the rows in CHUNK_ROWS-row chunks."""
    starts = range(0, x.shape[0], CHUNK_ROWS)
    if kind == "memmap":
        np.save(directory / "x.npy", x)
        np.save(directory / "w.npy", w)
        weights = np.load(directory / "w.npy", mmap_mode="r")
        return np.load(directory / "x.npy", mmap_mode="r"), weights, CHUNK_ROWS
    if kind == "path":
        np.save(directory / "x.npy", x)
        np.save(directory / "w.npy", w)
        return str(directory / "x.npy"), directory / "w.npy", CHUNK_ROWS
    if kind == "chunk_list":
        return [(x[i : i + CHUNK_ROWS], w[i : i + CHUNK_ROWS]) for i in starts], None, None
    if kind == "callable":
        return (
            (lambda: ((x[i : i + CHUNK_ROWS], w[i : i + CHUNK_ROWS]) for i in starts)),
            None,
            None,
        )
    return x, w, CHUNK_ROWS  # an in-memory array read by chunks because chunk_size is set


@pytest.mark.parametrize("kind", ["memmap", "path", "chunk_list", "callable", "chunk_size"])
def test_fit_by_chunks_equals_the_in_memory_fit(tmp_path, data, in_memory, kind):
    x, w = data
    X, sample_weight, chunk_size = chunked_source(kind, x, w, tmp_path)
    model = GaussianMixture(chunk_size=chunk_size, **OPTIONS)
    labels = model.fit_predict(X, sample_weight=sample_weight)
    assert_same_fit(attributes_of(model), in_memory)
    assert model.method_ == in_memory.method_ == "maximum_likelihood"
    np.testing.assert_array_equal(labels, in_memory.predict(x))
    np.testing.assert_allclose(model.score_samples(x), in_memory.score_samples(x), atol=EXACT)
    assert not hasattr(model, "feature_names_in_")


@pytest.mark.parametrize("kind", ["memmap", "path"])
def test_scoring_data_on_disk_reads_chunks_and_equals_in_memory(tmp_path, data, in_memory, kind):
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    X = np.load(tmp_path / "x.npy", mmap_mode="r") if kind == "memmap" else tmp_path / "x.npy"
    model = deepcopy(in_memory).set_params(chunk_size=CHUNK_ROWS)
    rows, log_resp = [], model._log_resp
    model._log_resp = lambda chunk, errors=None: (
        rows.append(chunk.shape[0]) or log_resp(chunk, errors)
    )
    np.testing.assert_allclose(model.score_samples(X), in_memory.score_samples(x), atol=EXACT)
    assert rows == [CHUNK_ROWS] * 5 + [x.shape[0] - 5 * CHUNK_ROWS]  # one chunk at a time
    np.testing.assert_allclose(model.score(X), in_memory.score(x), rtol=EXACT)
    np.testing.assert_array_equal(model.predict(X), in_memory.predict(x))
    np.testing.assert_allclose(model.predict_proba(X), in_memory.predict_proba(x), atol=EXACT)
    broken = x.copy()
    broken[CHUNK_ROWS + 1, 2] = np.nan  # in the second chunk
    np.save(tmp_path / "broken.npy", broken)
    with pytest.raises(ValueError, match="NaN"):
        model.predict(tmp_path / "broken.npy")


# ---------------------------------------------------------------------------------------
# partial_fit: online EM

#: Two well separated 2-D components (diag), fitted in chunks of CHUNK rows.
TRUE_WEIGHTS = np.array([0.3, 0.7])
TRUE_MEANS = np.array([[-4.0, 0.0], [3.0, 1.0]])
ONLINE = {"n_components": 2, "covariance_type": "diag", "random_state": 0}
CHUNK = 1000


def online_chunks(n_chunks: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(2, n_chunks * CHUNK, p=TRUE_WEIGHTS)
    x = TRUE_MEANS[labels] + rng.standard_normal((labels.size, 2))
    return np.split(x, n_chunks)


def chunk_weights(n_chunks: int, learning_decay: float, learning_offset: float) -> np.ndarray:
    """Weight a_t of chunk t's statistics in the running average after the last update:
    a_0 = prod_j (1 - rho_j), a_t = rho_t prod_{j > t} (1 - rho_j)."""
    rho = (np.arange(1, n_chunks) + learning_offset) ** (-learning_decay)
    keep = np.append(np.cumprod((1 - rho)[::-1])[::-1], 1.0)
    return np.concatenate([[1.0], rho]) * keep


def test_partial_fit_pass_reaches_the_truth_within_monte_carlo_error():
    """The running statistics average the chunk statistics with weights a_t, so each
    estimate's standard error is about sqrt(sum a_t^2 / n) times the per-point standard
    deviation (sample sizes scaled by the component weight); six of them bound it."""
    n_chunks, decay, offset = 40, 0.6, 5.0
    model = GaussianMixture(learning_decay=decay, learning_offset=offset, **ONLINE)
    for chunk in online_chunks(n_chunks, seed=3):
        model.partial_fit(chunk)
    assert model.n_iter_ == n_chunks - 1
    assert model.lower_bounds_.shape == (n_chunks - 1,)
    effective = np.sum(chunk_weights(n_chunks, decay, offset) ** 2) / CHUNK
    order = np.argsort(model.means_[:, 0])
    error = np.sqrt(effective / TRUE_WEIGHTS)[:, None] * np.ones((1, 2))
    np.testing.assert_array_less(np.abs(model.means_[order] - TRUE_MEANS), 6 * error)
    np.testing.assert_array_less(np.abs(model.covariances_[order] - 1), 6 * np.sqrt(2) * error)
    weight_error = np.sqrt(effective * TRUE_WEIGHTS * (1 - TRUE_WEIGHTS))
    np.testing.assert_array_less(np.abs(model.weights_[order] - TRUE_WEIGHTS), 6 * weight_error)


def parameters_of(result: em.EMResult) -> em.MixtureParameters:
    params = result.params
    return em.MixtureParameters(
        params["weights"], params["means"], params["variances"], result.precisions_cholesky
    )


def assert_state_matches(model: GaussianMixture, state: streaming.OnlineEMState) -> None:
    for attribute, value in (
        ("weights_", state.parameters.weights),
        ("means_", state.parameters.means),
        ("covariances_", state.parameters.covariances),
        ("precisions_cholesky_", state.parameters.precisions_cholesky),
    ):
        np.testing.assert_allclose(getattr(model, attribute), value, rtol=1e-12, atol=1e-14)
    assert model.lower_bound_ == pytest.approx(float(state.lower_bound), rel=1e-12)


def test_partial_fit_is_online_em_driven_by_hand(tmp_path):
    chunks = online_chunks(5, seed=4)
    weights = [np.random.default_rng(index).uniform(0.5, 2.0, CHUNK) for index in range(5)]
    schedule = {"learning_decay": 0.8, "learning_offset": 2.0}
    model = GaussianMixture(**schedule, **ONLINE)
    for chunk, weight in zip(chunks[:4], weights[:4], strict=True):
        model.partial_fit(chunk, sample_weight=weight)
    # By hand: EM on the first chunk (fit's options), then one online step per chunk.
    first = em.fit_em(
        chunks[0], n_components=2, covariance_type="diag", sample_weight=weights[0], seed=0
    )
    state = streaming.online_em_start(
        chunks[0], parameters_of(first), covariance_type="diag", sample_weight=weights[0]
    )
    bounds = []
    for chunk, weight in zip(chunks[1:4], weights[1:4], strict=True):
        state = streaming.online_em_step(
            state, chunk, covariance_type="diag", sample_weight=weight, **schedule
        )
        bounds.append(float(state.lower_bound))
    assert_state_matches(model, state)
    np.testing.assert_allclose(model.lower_bounds_, bounds, rtol=1e-12)
    assert model.n_iter_ == 3
    assert model.converged_ == (abs(bounds[-1] - bounds[-2]) < model.tol)
    # A pickled or saved estimator carries its running statistics on.
    state = streaming.online_em_step(
        state, chunks[4], covariance_type="diag", sample_weight=weights[4], **schedule
    )
    for copy in (pickle.loads(pickle.dumps(model)), load(save(model, tmp_path / "online"))):
        copy.partial_fit(chunks[4], sample_weight=weights[4])
        assert_state_matches(copy, state)
    # After fit, partial_fit continues the fit (incremental EM): the fitted data's
    # statistics with their weight start the running statistics, every chunk is an update.
    fitted = GaussianMixture(**schedule, **ONLINE).fit(chunks[0], sample_weight=weights[0])
    state = streaming.online_em_continue(
        parameters_of(first),
        total_weight=float(weights[0].sum()),
        covariance_type="diag",
        lower_bound=fitted.lower_bound_,
    )
    for chunk in chunks[1:3]:
        fitted.partial_fit(chunk)
        state = streaming.online_em_step(state, chunk, covariance_type="diag", **schedule)
    assert_state_matches(fitted, state)
    assert fitted.n_iter_ == 2


def online_em_by_hand(theta, chunks, weights, learning_decay, learning_offset, reg_covar):
    """Online EM of a diagonal mixture in plain NumPy (float64), written from the
    recursion of gaussmix.inference.streaming's docstring:

        s_0 = s_hat(X_0; theta_0),  W_0 = sum w_0,
        s_t = (1 - rho_t) s_{t-1} + rho_t s_hat(X_t; theta_{t-1}),  rho_t = (t + tau0)^-kappa,
        W_t = W_{t-1} + sum w_t,  theta_t = M-step(W_t s_t),

    s_hat the statistics per unit weight (sum_n w_n r_nk, sum_n w_n r_nk x_n,
    sum_n w_n r_nk x_n^2, sum_n w_n log p(x_n)) / sum_n w_n, with raw (uncentred) moments;
    the M-step adds reg_covar to every variance. Returns theta_t (weights, means,
    variances) and the running lower bound (the log p entry of s_t) after each update."""

    def statistics(x, w, theta):
        mixture_weights, means, variances = theta
        log_prob = np.log(mixture_weights) + stats.norm(
            means[None], np.sqrt(variances)[None]
        ).logpdf(x[:, None]).sum(-1)
        log_norm = logsumexp(log_prob, axis=1)
        r = w[:, None] * np.exp(log_prob - log_norm[:, None])
        return [value / np.sum(w) for value in (r.sum(0), r.T @ x, r.T @ x**2, w @ log_norm)]

    def m_step(counts, first, second):
        means = first / counts[:, None]
        return counts / counts.sum(), means, second / counts[:, None] - means**2 + reg_covar

    running = statistics(chunks[0], weights[0], theta)
    total = np.sum(weights[0])
    fits, bounds = [], []
    for t, (x, w) in enumerate(zip(chunks[1:], weights[1:], strict=True), start=1):
        rho = (t + learning_offset) ** (-learning_decay)
        chunk = statistics(x, w, theta)
        running = [(1 - rho) * old + rho * new for old, new in zip(running, chunk, strict=True)]
        total = total + np.sum(w)
        theta = m_step(*(total * value for value in running[:3]))
        fits.append(theta)
        bounds.append(running[3])
    return fits, bounds


def test_partial_fit_from_scratch_is_the_online_em_recursion_by_hand():
    """The pure partial_fit path of an unfitted estimator (EM on the first chunk, then one
    online update per chunk) against the recursion written out in NumPy, from the
    estimator's own first-chunk fit theta_0 (that EM is fit_em, checked against
    scikit-learn elsewhere). Only rounding separates them: gaussmix takes moments about
    the first chunk's mean and adds 10 eps to the counts; raw moments of values up to
    |x| ~ 7 lose ~50 eps to cancellation in E[x^2] - m^2, over 1000-row sums (sqrt(N) eps):
    about 1e-13 relative. Measured over four updates: weights 2.2e-16, means 1.8e-14,
    variances 2.4e-14, lower bounds 2.2e-16 relative. Tolerance: 2e-13 relative."""
    chunks = online_chunks(5, seed=6)
    weights = [np.random.default_rng(10 + index).uniform(0.5, 2.0, CHUNK) for index in range(5)]
    schedule = {"learning_decay": 0.9, "learning_offset": 3.0}
    model = GaussianMixture(**schedule, **ONLINE).partial_fit(chunks[0], sample_weight=weights[0])
    theta = (model.weights_, model.means_, model.covariances_)
    fits, bounds = online_em_by_hand(theta, chunks, weights, reg_covar=model.reg_covar, **schedule)
    for t, (chunk, weight) in enumerate(zip(chunks[1:], weights[1:], strict=True), start=1):
        model.partial_fit(chunk, sample_weight=weight)
        for attribute, expected in zip(
            ("weights_", "means_", "covariances_"), fits[t - 1], strict=True
        ):
            np.testing.assert_allclose(
                getattr(model, attribute), expected, rtol=2e-13, err_msg=f"{attribute} {t}"
            )
        np.testing.assert_allclose(model.lower_bounds_, bounds[:t], rtol=2e-13)
        assert model.n_iter_ == t and model.lower_bound_ == model.lower_bounds_[-1]
    np.testing.assert_allclose(model.precisions_cholesky_, 1 / np.sqrt(fits[-1][2]), rtol=2e-13)


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_input_is_refused_with_a_fix(tmp_path, data):
    x, w = data
    model = GaussianMixture(**OPTIONS)
    with pytest.raises(ValueError, match="does not exist"):
        model.fit(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=r"not a \.npy file"):
        model.fit(str(tmp_path / "x.csv"))
    np.save(tmp_path / "flat.npy", x[:, 0])
    with pytest.raises(ValueError, match=r"shape \(N, D\).*reshape"):
        model.fit(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match=r"chunk 1 has shape \(400, 2\)"):
        model.fit([x[:400], x[400:800, :2]])
    with pytest.raises(ValueError, match=r"read only once.*partial_fit"):
        model.fit(chunk for chunk in (x[:400], x[400:]))
    with pytest.raises(ValueError, match=r"\(x, w\) tuples"):
        model.fit([x[:400], x[400:]], sample_weight=w)
    with pytest.raises(ValueError, match="one weight per row"):
        GaussianMixture(chunk_size=CHUNK_ROWS, **OPTIONS).fit(x, sample_weight=w[:-1])
    bad = x.copy()
    bad[500, 1] = np.nan
    with pytest.raises(ValueError, match="chunk 1 contains NaN"):
        GaussianMixture(chunk_size=CHUNK_ROWS, **OPTIONS).fit(bad)
    with pytest.raises(ValueError, match="'chunk_size' parameter"):
        GaussianMixture(chunk_size=0).fit(x)
    # devices: an in-memory array only, and no more devices than exist.
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"load it with np\.asarray"):
        GaussianMixture(devices=1).fit(tmp_path / "x.npy")
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        GaussianMixture(devices=64).fit(x)
    with pytest.raises(ValueError, match="sequence of jax devices"):
        GaussianMixture(devices="gpu").fit(x)
    # partial_fit: the schedule, the first chunk's size, the number of features.
    with pytest.raises(ValueError, match="learning_decay must be in"):
        GaussianMixture(learning_decay=0.5).partial_fit(x)
    with pytest.raises(ValueError, match="learning_offset must be"):
        GaussianMixture(learning_offset=-1.0).partial_fit(x)
    online = GaussianMixture(**{**ONLINE, "n_components": 3})
    with pytest.raises(ValueError, match="minimum of 3 is required"):
        online.partial_fit(x[:2])
    assert not hasattr(online, "n_features_in_")
    online = GaussianMixture(**ONLINE).partial_fit(online_chunks(1, seed=6)[0])
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        online.partial_fit(x[:500])
    with pytest.raises(ValueError, match="contains NaN"):
        online.partial_fit(bad[400:600, :2])


def test_clone_shares_devices_and_copies_the_rest():
    """scikit-learn's clone deep-copies parameters; JAX devices and meshes cannot be
    copied, so the clone shares them (model selection tools clone estimators)."""
    import jax
    from sklearn.base import clone

    devices = jax.devices()
    means_init = np.zeros((2, 3))
    for value in (devices, tuple(devices), jax.sharding.Mesh(np.array(devices), ("rows",))):
        estimator = GaussianMixture(2, devices=value, means_init=means_init, reg_covar=1e-5)
        copy = clone(estimator)
        assert copy is not estimator and copy.devices is value
        assert copy.reg_covar == 1e-5 and not copy.__sklearn_is_fitted__()
        assert copy.means_init is not means_init
        np.testing.assert_array_equal(copy.means_init, means_init)

"""Multi-device EM equals single-device EM (1e-10 in float64) on 4 forced CPU devices,
through fit_em_sharded and through ``GaussianMixture(devices=...)``; shard_batch splits a
vmapped fit over devices and changes nothing in its answer; bad device options are
refused with a message that says what to do.

The four devices exist only in a fresh interpreter (XLA_FLAGS is read when JAX starts),
so the sharded fits run in ``shard_worker.py``, all in one subprocess; this process keeps
one device and computes the single-device references."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussmix import GaussianMixture
from gaussmix.inference import em
from gaussmix.inference.shard import device_mesh, fit_em_sharded, shard_batch
from gaussmix.models.priors import COVARIANCE_SITES

EXACT = 1e-10
WORKER = Path(__file__).with_name("shard_worker.py")
#: A hang must fail the test rather than block CI; far above the seconds it needs.
SUBPROCESS_TIMEOUT = 600

#: GaussianMixture's options: those of CONFIGS[0], so the worker reuses its compiled fit.
ESTIMATOR = {
    "n_components": 3,
    "covariance_type": "full",
    "tol": 1e-8,
    "max_iter": 200,
    "random_state": 0,
}
#: Fitted attributes compared between GaussianMixture on 4 devices and on one.
ESTIMATOR_ARRAYS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "lower_bounds_",
)

CONFIGS = [
    {"n_components": 3, "covariance_type": "full", "priors": None, "weighted": True},
    {"n_components": 3, "covariance_type": "diag", "priors": "default", "weighted": False},
    # Maximum likelihood from an explicit start: checked against scikit-learn, not only
    # against gaussmix's own in-memory fit.
    {"n_components": 3, "covariance_type": "full", "priors": None, "weighted": False,
     "start": "poor"},
]  # fmt: skip


def poor_start(x: np.ndarray) -> dict:
    """A start several EM iterations from the optimum (test_streaming's, from which EM
    converges in 11 iterations): equal weights, means on three rows, broad precisions;
    JSON-ready for the worker."""
    rng = np.random.default_rng(2)
    return {
        "weights_init": [1 / 3] * 3,
        "means_init": x[rng.choice(x.shape[0], 3, replace=False)].tolist(),
        "precisions_init": [(0.3 * np.eye(x.shape[1])).tolist()] * 3,
    }


def clustered_data():
    """2103 rows (not a multiple of 4) of three 3-D clusters, and positive weights; the
    data of test_streaming, so compiled reference fits are shared."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, s, (701, 3)) for m, s in ((-3, 1.0), (0, 0.5), (4, 1.5))])
    rng.shuffle(x)
    return x, rng.uniform(0.5, 2.0, x.shape[0])


def options(config: dict) -> dict:
    return {
        "n_components": config["n_components"],
        "covariance_type": config["covariance_type"],
        "priors": config["priors"],
        "tol": 1e-8,
        "max_iter": 200,
    }


def run_worker(spec: dict, env: dict) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, str(WORKER), json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the worker did not finish in {SUBPROCESS_TIMEOUT} s: {error.stderr}")


def test_four_devices_equal_one_device(tmp_path):
    x, w = clustered_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    configs = [
        {**config, **options(config), "start": poor_start(x) if config.get("start") else {}}
        for config in CONFIGS
    ]
    spec = {
        "mode": "devices",
        "data": str(tmp_path / "x.npy"),
        "weights": str(tmp_path / "w.npy"),
        "out": str(tmp_path / "out.npz"),
        "configs": configs,
        "devices": 4,
        "estimator": ESTIMATOR,
    }
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    completed = run_worker(spec, env)
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    assert int(out["device_count"]) == 4
    for index, config in enumerate(CONFIGS):
        start = {name: np.asarray(value) for name, value in configs[index]["start"].items()}
        reference = em.fit_em(
            x, sample_weight=w if config["weighted"] else None, **options(config), **start
        )
        site = COVARIANCE_SITES[config["covariance_type"]]
        for name, key in (("weights", "weights"), ("means", "means"), (site, "covariances")):
            np.testing.assert_allclose(
                out[f"{index}/sharded/{key}"], reference.params[name], rtol=0, atol=EXACT
            )
        assert (
            abs(float(out[f"{index}/sharded/lower_bound"]) - float(reference.lower_bound)) < EXACT
        )
        assert int(out[f"{index}/sharded/n_iter"]) == int(reference.n_iter) > 1
    # The sharded maximum-likelihood fit from an explicit start is scikit-learn's EM from
    # that start, at every iteration. Both sum 2103 rows in another order (four shards and
    # blocks about a centre against one pass): sqrt(N) eps ~ 1e-14 relative per
    # iteration, damped by EM's contraction (11 iterations); measured 8.0e-16 relative on
    # the lower bounds and 1.8e-14 absolute on the parameters (values of order 1 to 10);
    # tolerances 1e-13 relative and 2e-13 absolute (about 10x), as for the chunked fit in
    # test_streaming.
    index = next(i for i, config in enumerate(CONFIGS) if config.get("start"))
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    start = {name: np.asarray(value) for name, value in configs[index]["start"].items()}
    sklearn_fit = sklearn_mixture.GaussianMixture(
        3, covariance_type="full", tol=1e-8, max_iter=200, **start
    ).fit(x)
    n_iter = sklearn_fit.n_iter_
    assert sklearn_fit.converged_
    assert int(out[f"{index}/sharded/n_iter"]) == n_iter > 5
    np.testing.assert_allclose(
        out[f"{index}/sharded/lower_bounds"][:n_iter], sklearn_fit.lower_bounds_, rtol=1e-13
    )
    for key, attribute in (
        ("weights", "weights_"), ("means", "means_"), ("covariances", "covariances_"),
    ):  # fmt: skip
        np.testing.assert_allclose(
            out[f"{index}/sharded/{key}"], getattr(sklearn_fit, attribute), rtol=0, atol=2e-13
        )
    # shard_batch: ten spectra on four devices (two padded) give the vmapped answer,
    # each spectrum with its own number of iterations; eight spectra stay on 4 devices.
    np.testing.assert_allclose(out["peaks/sharded"], out["peaks/vmapped"], rtol=1e-12)
    np.testing.assert_array_equal(out["peaks/n_iter"], out["peaks/vmapped_n_iter"])
    assert np.all(np.isfinite(out["peaks/sharded"]))
    assert int(out["peaks/even_devices"]) == 4
    # The peak MAP back end (fit_map) with its ten spectra split over the four devices
    # finds every true peak within six of its own (Laplace) standard errors.
    names = [str(name) for name in out["map/parameter_names"]]
    assert np.all(out["map/converged"])
    for row, name in enumerate(("height", "centre", "width")):
        error = out["map/standard_errors"][:, names.index(name)]
        assert np.all(np.abs(out[f"map/{name}"] - out["map/truth"][row]) < 6 * error), name
    # GaussianMixture(devices=4 | list of 4 devices | mesh) == the one-device estimator.
    reference = GaussianMixture(**ESTIMATOR).fit(x, sample_weight=w)
    for variant in ("count", "list", "mesh"):
        prefix = f"estimator/{variant}"
        for name in ESTIMATOR_ARRAYS:
            np.testing.assert_allclose(
                out[f"{prefix}/{name}"], getattr(reference, name), rtol=0, atol=EXACT, err_msg=name
            )
        assert abs(float(out[f"{prefix}/lower_bound_"]) - reference.lower_bound_) < EXACT
        assert int(out[f"{prefix}/n_iter_"]) == reference.n_iter_ > 1
        assert bool(out[f"{prefix}/converged_"]) == reference.converged_
        assert int(out[f"{prefix}/n_features_in_"]) == reference.n_features_in_
        np.testing.assert_array_equal(out[f"{prefix}/labels"], reference.predict(x))


def test_shard_batch_on_one_device_matches_vmap():
    def newton_square_root(value):
        def body(state):
            root, _ = state
            new = 0.5 * (root + value / root)
            return new, jnp.abs(new - root)

        return jax.lax.while_loop(lambda s: s[1] > 1e-12, body, (value, jnp.inf))[0]

    values = jnp.linspace(1.0, 50.0, 7)
    roots = shard_batch(jax.vmap(newton_square_root), devices=1)(values)
    np.testing.assert_allclose(roots, np.sqrt(np.asarray(values)), rtol=1e-12)


def test_bad_device_options_are_refused():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        device_mesh(64)
    with pytest.raises(ValueError, match="non-empty sequence"):
        device_mesh([])
    with pytest.raises(ValueError, match="more than once"):
        device_mesh([jax.devices()[0]] * 2)
    with pytest.raises(ValueError, match="one-axis mesh"):
        device_mesh(jax.make_mesh((1, 1), ("a", "b")))
    scaled = shard_batch(jax.vmap(lambda a, b: a * b), devices=1)
    with pytest.raises(ValueError, match="one leading batch size"):
        scaled(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="0 or None"):
        shard_batch(jax.vmap(jnp.sin), in_axes=(1,))(jnp.ones(3))
    x, _ = clustered_data()
    with pytest.raises(ValueError, match="one weight per row"):
        fit_em_sharded(x, n_components=3, sample_weight=np.ones(5))
    bad = x.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fit_em_sharded(bad, n_components=3)

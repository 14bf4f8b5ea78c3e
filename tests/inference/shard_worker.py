"""Subprocess helper of test_shard.py and test_multiprocess.py (not collected by pytest).

Several devices or processes must be set up before JAX starts, so the tests run this
script in fresh interpreters. One JSON argument:

- ``{"mode": "devices", "data", "weights", "out", "configs", "devices"}``: fit every
  config with :func:`fit_em_sharded` over the forced CPU devices, run :func:`shard_batch`
  on a vmapped peak fit and on the peak MAP back end's batch function
  (:func:`gaussmix.inference.map.fit_map` with its spectra split over the devices), save
  the results to ``out`` (npz).
- ``{"mode": "process", "data", "out", "configs"}``, in a process of a
  ``jax.distributed`` group (started by ``tests/processes.py``, which joins it): read
  this process's share of the rows of the .npy file ``data`` and fit every config with
  :func:`fit_em_sharded` and :func:`fit_em_chunked` (process-local rows); with
  ``"errors"``, a .npy file of the rows' measurement variances, the estimator's fits
  take this process's rows of it beside its rows.

With ``"estimator": options`` both modes also fit ``gaussmix.GaussianMixture(**options)``
and save its fitted attributes: the devices mode with ``devices`` given as a count, a
list of devices and a one-axis mesh (and the labels of ``fit_predict``), the process
mode on this process's rows with ``devices=jax.devices()`` and with ``chunk_size``.
"""

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

jax.config.update("jax_enable_x64", True)

import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from gaussmix.inference import map as peak_map  # noqa: E402
from gaussmix.inference import shard, streaming  # noqa: E402
from gaussmix.models.priors import COVARIANCE_SITES  # noqa: E402


def save_fit(results: dict, prefix: str, fit, covariance_type: str) -> None:
    results[f"{prefix}/weights"] = np.asarray(fit.params["weights"])
    results[f"{prefix}/means"] = np.asarray(fit.params["means"])
    results[f"{prefix}/covariances"] = np.asarray(fit.params[COVARIANCE_SITES[covariance_type]])
    results[f"{prefix}/lower_bound"] = np.asarray(fit.lower_bound)
    results[f"{prefix}/n_iter"] = np.asarray(fit.n_iter)
    results[f"{prefix}/lower_bounds"] = np.asarray(fit.lower_bounds)


def fit_options(config: dict) -> dict:
    start = {name: np.asarray(value) for name, value in config.get("start", {}).items()}
    return {
        "n_components": config["n_components"],
        "covariance_type": config["covariance_type"],
        "priors": config["priors"],
        "tol": config["tol"],
        "max_iter": config["max_iter"],
        **start,
    }


def peak_fit(x, y, start):
    """Gauss-Newton fit of height, centre, width of one Gaussian peak (a while loop)."""

    def residual(theta):
        height, centre, width = theta
        return height * jnp.exp(-0.5 * ((x - centre) / width) ** 2) - y

    def cond(state):
        _, n_iter, step = state
        return (n_iter < 100) & (step > 1e-14)

    def body(state):
        theta, n_iter, _ = state
        jacobian = jax.jacfwd(residual)(theta)
        update = jnp.linalg.solve(jacobian.T @ jacobian, jacobian.T @ residual(theta))
        return theta - update, n_iter + 1, jnp.max(jnp.abs(update))

    theta, n_iter, _ = lax.while_loop(cond, body, (start, 0, jnp.inf))
    return theta, n_iter


def gaussian_peak(x, y=None):
    """One Gaussian peak with Gaussian noise, as a NumPyro program for fit_map."""
    height = numpyro.sample("height", dist.HalfNormal(10.0))
    centre = numpyro.sample("centre", dist.Normal(0.0, 5.0))
    width = numpyro.sample("width", dist.HalfNormal(3.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    curve = height * jnp.exp(-0.5 * ((x - centre) / width) ** 2)
    numpyro.sample("y", dist.Normal(curve, sigma), obs=y)


def devices_mode(spec: dict) -> dict:
    results = {"device_count": np.asarray(jax.device_count())}
    x = np.load(spec["data"])
    weights = np.load(spec["weights"])
    for index, config in enumerate(spec["configs"]):
        fit = shard.fit_em_sharded(
            x,
            sample_weight=weights if config["weighted"] else None,
            devices=spec["devices"],
            **fit_options(config),
        )
        save_fit(results, f"{index}/sharded", fit, config["covariance_type"])
    # Ten spectra over four devices: two of them get a padded (repeated) spectrum.
    grid = jnp.linspace(-5.0, 5.0, 101)
    truth = jnp.stack([jnp.linspace(1.0, 3.0, 10), jnp.linspace(-1.0, 1.0, 10), jnp.full(10, 0.8)])
    spectra = truth[0][:, None] * jnp.exp(
        -0.5 * ((grid - truth[1][:, None]) / truth[2][:, None]) ** 2
    )
    spectra = spectra + 0.01 * jnp.sin(7.0 * grid)
    starts = truth.T + jnp.array([0.3, 0.2, 0.15])
    batched = jax.vmap(peak_fit, in_axes=(None, 0, 0))
    sharded = shard.shard_batch(batched, devices=spec["devices"], in_axes=(None, 0, 0))
    theta, n_iter = sharded(grid, spectra, starts)
    reference, reference_n_iter = jax.jit(batched)(grid, spectra, starts)
    results["peaks/sharded"] = np.asarray(theta)
    results["peaks/vmapped"] = np.asarray(reference)
    results["peaks/n_iter"] = np.asarray(n_iter)
    results["peaks/vmapped_n_iter"] = np.asarray(reference_n_iter)
    even_theta, _ = sharded(grid, spectra[:8], starts[:8])
    results["peaks/even_devices"] = np.asarray(len(even_theta.sharding.device_set))
    # The MAP back end itself: fit_map with its spectra split over the devices.
    noisy = spectra + 0.05 * jax.random.normal(jax.random.key(0), spectra.shape)
    init = {"height": 2.0, "centre": 0.0, "width": 1.0, "sigma": 0.1}
    split = peak_map.fit_map(
        gaussian_peak, grid, noisy, init, batch_size=2, devices=spec["devices"]
    )
    for name in init:
        results[f"map/{name}"] = np.asarray(split.params[name])
    results["map/truth"] = np.asarray(truth)
    results["map/standard_errors"] = np.sqrt(np.diagonal(np.asarray(split.covariance), 0, -2, -1))
    results["map/parameter_names"] = np.asarray(split.parameter_names)
    results["map/converged"] = np.asarray(split.converged)
    results["map/devices"] = np.asarray(len(split.params["height"].sharding.device_set))
    if "estimator" in spec:
        results.update(estimator_fits(x, weights, spec["estimator"]))
    return results


def process_mode(spec: dict) -> dict:
    data = np.load(spec["data"], mmap_mode="r")
    bounds = np.linspace(0, data.shape[0], jax.process_count() + 1).astype(int)
    start, stop = bounds[jax.process_index()], bounds[jax.process_index() + 1]
    local = data[start:stop]
    results = {
        "process_count": np.asarray(jax.process_count()),
        "local_rows": np.asarray(local.shape[0]),
    }
    for index, config in enumerate(spec["configs"]):
        fit = shard.fit_em_sharded(np.asarray(local), **fit_options(config))
        save_fit(results, f"{index}/sharded", fit, config["covariance_type"])
        fit = streaming.fit_em_chunked(local, chunk_rows=97, **fit_options(config))
        save_fit(results, f"{index}/chunked", fit, config["covariance_type"])
    if "estimator" in spec:
        from gaussmix import GaussianMixture

        # This process's rows: split over every device of every process, or by chunks
        # whose statistics are summed across the processes; with "errors", the rows'
        # measurement variances beside them.
        errors = None
        if "errors" in spec:
            errors = np.asarray(np.load(spec["errors"], mmap_mode="r")[start:stop])
        for name, rows, options in (
            ("sharded", np.asarray(local), {"devices": jax.devices()}),
            ("chunked", local, {"chunk_size": 97}),
        ):
            model = GaussianMixture(**options, **spec["estimator"])
            model.fit(rows, measurement_covariances=errors)
            for attribute in ESTIMATOR_ATTRIBUTES:
                results[f"estimator/{name}/{attribute}"] = np.asarray(getattr(model, attribute))
    return results


#: Fitted attributes of GaussianMixture compared across device options.
ESTIMATOR_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "lower_bound_",
    "lower_bounds_",
    "n_iter_",
    "converged_",
    "n_features_in_",
)


def estimator_fits(x, weights, options: dict) -> dict:
    """GaussianMixture(**options) fitted with devices as a count, a list and a mesh."""
    from jax.sharding import Mesh

    from gaussmix import GaussianMixture

    results = {}
    variants = {
        "count": jax.device_count(),
        "list": jax.devices(),
        "mesh": Mesh(np.asarray(jax.devices()), ("rows",)),
    }
    for name, devices in variants.items():
        model = GaussianMixture(devices=devices, **options)
        labels = model.fit_predict(x, sample_weight=weights)
        for attribute in ESTIMATOR_ATTRIBUTES:
            results[f"estimator/{name}/{attribute}"] = np.asarray(getattr(model, attribute))
        results[f"estimator/{name}/labels"] = labels
    return results


def main() -> None:
    spec = json.loads(sys.argv[1])
    results = devices_mode(spec) if spec["mode"] == "devices" else process_mode(spec)
    np.savez(spec["out"], **results)


if __name__ == "__main__":
    main()

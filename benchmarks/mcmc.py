"""NUTS back end against plain NumPyro, side by side.

M1. posteriordb's low_dim_gauss_mix (N = 1000), 4 chains x 1000 warmup x 1000 draws:
    minimum bulk ESS over the five parameters per second of sampling, for

    * gaussmix: :func:`gaussmix.inference.mcmc.sample_mixture` on the mixture program
      (EM start, Laplace jitter and mass matrix, dense mass matrix, chains in one
      compiled program, relabeled by ordering the means);
    * plain NumPyro: the Stan model written directly (``MixtureSameFamily``, ordered
      transform on the means), ``MCMC(NUTS(model))`` with default settings and init;
    * plain NumPyro with ``dense_mass=True`` (to show where the difference comes from).

    Compile time is measured apart: for gaussmix as reported in ``sample_stats.attrs``
    (a second, warm call compiles nothing); for NumPyro from JAX's compilation events
    (``jax.monitoring``: tracing, lowering and backend compilation), subtracted from the
    wall time of ``mcmc.run``. gaussmix's "end to end" time is the whole warm call (EM,
    Laplace fit, sampling, log-likelihood, DataTree, relabeling, responsibilities).
    Each method runs ``--repeats`` times with different seeds, alternating; medians are
    reported.

M2. 2-D, K = 4, N = 2000, full covariance, 4 x 1000 x 1000: R-hat after relabeling for
    every parameter, and bulk ESS per second; the plain NumPyro run of the same mixture
    program (default init, no relabeling) is shown for contrast.

Run: ``.venv/bin/python benchmarks/mcmc.py`` (``--repeats 1`` for a quick run,
``--skip-m2`` to leave M2 out). Numbers go to BENCHMARKS.md.
"""

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import arviz_stats  # noqa: E402
import jax.monitoring  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from arviz_base import from_dict  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from gaussmix.inference.mcmc import sample_mixture  # noqa: E402
from gaussmix.models.mixture import gaussian_mixture  # noqa: E402

DATA = Path(
    os.environ.get("GAUSSMIX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CHAINS, WARMUP, DRAWS = 4, 1000, 1000
PRIORS = {
    "weights": dist.Dirichlet(jnp.array([5.0, 5.0])),
    "means": dist.Normal(0.0, 2.0),
    "scales": dist.HalfNormal(2.0),
}
_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
}
_COMPILE_SECONDS = [0.0]


def _record_compile(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _COMPILE_SECONDS[0] += duration


jax.monitoring.register_event_duration_secs_listener(_record_compile)


def cpu_name() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in output.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def low_dim_gauss_mix(y):
    """posteriordb's Stan model written plainly in NumPyro."""
    mu = numpyro.sample(
        "mu",
        dist.TransformedDistribution(
            dist.Normal(0.0, 2.0).expand([2]), dist.transforms.OrderedTransform()
        ),
    )
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)


def min_bulk_ess(posterior: dict) -> float:
    ess = arviz_stats.ess(from_dict({"posterior": posterior}), method="bulk")
    return min(float(ess[name].min()) for name in ess.data_vars)


def run_gaussmix(y, seed):
    start = time.perf_counter()
    tree = sample_mixture(
        y,
        n_components=2,
        covariance_type="spherical",
        priors=PRIORS,
        num_warmup=WARMUP,
        num_samples=DRAWS,
        num_chains=CHAINS,
        seed=seed,
        progress_bar=False,
    )
    wall = time.perf_counter() - start
    posterior = {
        "mu": tree.posterior["means"].values[..., 0],
        "sigma": tree.posterior["scales"].values,
        "theta": tree.posterior["weights"].values[..., 0],
    }
    attrs = tree.sample_stats.attrs
    return {
        "min_ess": min_bulk_ess(posterior),
        "sampling": attrs["sampling_time"],
        "end_to_end": wall - attrs["compile_time"],
        "compile": attrs["compile_time"],
        "divergences": int(tree.sample_stats["diverging"].values.sum()),
    }


def run_numpyro(y, seed, dense_mass=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not enough devices": sequential
        mcmc = MCMC(
            NUTS(low_dim_gauss_mix, dense_mass=dense_mass),
            num_warmup=WARMUP,
            num_samples=DRAWS,
            num_chains=CHAINS,
            progress_bar=False,
        )
    _COMPILE_SECONDS[0] = 0.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcmc.run(jax.random.key(seed), jnp.asarray(y))
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    wall = time.perf_counter() - start
    compile_seconds = _COMPILE_SECONDS[0]
    posterior = {name: np.asarray(value) for name, value in samples.items()}
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return {
        "min_ess": min_bulk_ess(posterior),
        "sampling": wall - compile_seconds,
        "end_to_end": wall - compile_seconds,
        "compile": compile_seconds,
        "divergences": divergences,
    }


def m1(repeats: int) -> dict:
    with open(DATA / "posteriordb" / "low_dim_gauss_mix.json") as file:
        y = np.asarray(json.load(file)["y"], float)
    methods = {
        "gaussmix": lambda seed: run_gaussmix(y, seed),
        "numpyro": lambda seed: run_numpyro(y, seed),
        "numpyro dense": lambda seed: run_numpyro(y, seed, dense_mass=True),
    }
    results = {name: [] for name in methods}
    start = time.perf_counter()
    run_gaussmix(y, 100)  # the first call compiles (the EM start too)
    first_call = time.perf_counter() - start
    for seed in range(repeats):
        for name, method in methods.items():
            result = method(seed)
            results[name].append(result)
            print(
                f"  {name:14s} seed {seed}: min ESS {result['min_ess']:7.0f}  sampling "
                f"{result['sampling']:6.2f} s  compile {result['compile']:6.2f} s  "
                f"divergences {result['divergences']}  (load {load_average()})",
                flush=True,
            )
    summary = {}
    for name, rows in results.items():
        summary[name] = {
            key: float(np.median([row[key] for row in rows]))
            for key in ("min_ess", "sampling", "end_to_end", "compile")
        }
        summary[name]["ess_per_second"] = float(
            np.median([row["min_ess"] / row["sampling"] for row in rows])
        )
        summary[name]["ess_per_second_end_to_end"] = float(
            np.median([row["min_ess"] / row["end_to_end"] for row in rows])
        )
    # gaussmix compiles once: what the first call costs beyond a warm one.
    summary["gaussmix"]["compile"] = first_call - summary["gaussmix"]["end_to_end"]
    return summary


def m2_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = np.array([[-6.0, -6.0], [-6.0, 6.0], [6.0, -6.0], [6.0, 6.0]])
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    counts = rng.multinomial(2000, weights)
    blocks = []
    for k, count in enumerate(counts):
        factor = rng.normal(size=(2, 2)) * 0.6 + np.eye(2)
        blocks.append(rng.normal(size=(count, 2)) @ factor.T + means[k])
    return np.concatenate(blocks)


def m2() -> dict:
    x = m2_data()
    kwargs = {"n_components": 4, "covariance_type": "full"}
    for _ in ("compile", "measure"):  # the first run compiles
        start = time.perf_counter()
        tree = sample_mixture(
            x,
            **kwargs,
            num_warmup=WARMUP,
            num_samples=DRAWS,
            num_chains=CHAINS,
            seed=1,
            progress_bar=False,
        )
        wall = time.perf_counter() - start
    r_hat = arviz_stats.rhat(tree)
    ess = arviz_stats.ess(tree, method="bulk")
    names = ("weights", "means", "covariances")
    max_r_hat = max(float(r_hat[name].max()) for name in names)
    min_ess = min(float(ess[name].min()) for name in names)
    attrs = tree.sample_stats.attrs
    gaussmix_row = {
        "max_r_hat": max_r_hat,
        "min_ess": min_ess,
        "sampling": attrs["sampling_time"],
        "end_to_end": wall - attrs["compile_time"],
        "ess_per_second": min_ess / attrs["sampling_time"],
        "divergences": int(tree.sample_stats["diverging"].values.sum()),
        "label_switching": tree.posterior.attrs["label_switching"],
    }
    print(f"  gaussmix: {gaussmix_row}  (load {load_average()})", flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcmc = MCMC(
            NUTS(gaussian_mixture),
            num_warmup=WARMUP,
            num_samples=DRAWS,
            num_chains=CHAINS,
            progress_bar=False,
        )
    _COMPILE_SECONDS[0] = 0.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcmc.run(jax.random.key(1), jnp.asarray(x), **kwargs)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - start - _COMPILE_SECONDS[0]
    plain = from_dict({"posterior": {n: np.asarray(samples[n]) for n in names}})
    plain_r_hat = arviz_stats.rhat(plain)
    plain_ess = arviz_stats.ess(plain, method="bulk")
    plain_row = {
        "max_r_hat": max(float(plain_r_hat[name].max()) for name in names),
        "min_ess": min(float(plain_ess[name].min()) for name in names),
        "sampling": seconds,
        "ess_per_second": min(float(plain_ess[name].min()) for name in names) / seconds,
        "divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
    }
    print(f"  numpyro:  {plain_row}  (load {load_average()})", flush=True)
    return {"gaussmix": gaussmix_row, "numpyro": plain_row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-m2", action="store_true")
    arguments = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, JAX devices {jax.local_device_count()}")
    print(f"M1 low_dim_gauss_mix, {CHAINS} chains x {WARMUP} warmup x {DRAWS} draws")
    summary = m1(arguments.repeats)
    print()
    print(
        f"{'method':14s} {'min bulk ESS':>12s} {'sampling s':>10s} {'ESS/s':>8s} "
        f"{'ESS/s e2e':>9s} {'compile s':>9s}"
    )
    for name, row in summary.items():
        print(
            f"{name:14s} {row['min_ess']:12.0f} {row['sampling']:10.2f} "
            f"{row['ess_per_second']:8.0f} {row['ess_per_second_end_to_end']:9.0f} "
            f"{row['compile']:9.2f}"
        )
    ratio = summary["gaussmix"]["ess_per_second"] / summary["numpyro"]["ess_per_second"]
    ratio_e2e = (
        summary["gaussmix"]["ess_per_second_end_to_end"] / summary["numpyro"]["ess_per_second"]
    )
    print(
        f"gaussmix / plain NumPyro, min bulk ESS per second: {ratio:.2f}x "
        f"(end to end: {ratio_e2e:.2f}x; target >= 1.5x)"
    )
    if not arguments.skip_m2:
        print()
        print(f"M2 2-D, K = 4, N = 2000, full covariance, {CHAINS} x {WARMUP} x {DRAWS}")
        m2()


if __name__ == "__main__":
    main()

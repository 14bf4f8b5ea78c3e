"""Two processes joined by ``jax.distributed`` on 127.0.0.1, each reading its half of a
.npy file, both reach the single-process answer (1e-10 in float64):

- EM with the rows sharded over the processes' devices (psum over Gloo) and by
  out-of-core chunks (host statistics summed across processes), through the inference
  functions and through ``GaussianMixture(devices=jax.devices())`` /
  ``GaussianMixture(chunk_size=...)``;
- ``GaussianMixture(background="uniform")`` with each row's measurement variances beside
  it (extreme deconvolution), sharded and by chunks: the background's box is that of all
  processes' rows and the deconvolution statistics are summed across processes.

Both checks run in one group of two processes (``tests/processes.py``; the worker is
``shard_worker.py``), one JAX start-up and one join for all their fits.
"""

from pathlib import Path

import jax
import numpy as np
import pytest

from gaussmix import GaussianMixture
from gaussmix.inference import em
from tests.processes import process_group, run_workers

EXACT = 1e-10
WORKER = Path(__file__).with_name("shard_worker.py")
PROCESSES = 2

pytestmark = pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason="this JAX build has no CPU collectives for multi-process computations",
)

#: The options of fit_em and of the worker's fits of the three clusters.
CONFIG = {"n_components": 3, "covariance_type": "full", "priors": None, "tol": 1e-8,
          "max_iter": 200}  # fmt: skip
#: GaussianMixture's options for the clusters with a uniform background.
BACKGROUND_ESTIMATOR = {
    "n_components": 2,
    "covariance_type": "full",
    "background": "uniform",
    "tol": 1e-8,
    "max_iter": 200,
    "random_state": 0,
}


def clusters() -> np.ndarray:
    """2103 rows of three 3-D clusters: the data of test_streaming and test_shard."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, s, (701, 3)) for m, s in ((-3, 1.0), (0, 0.5), (4, 1.5))])
    rng.shuffle(x)
    return x


def clusters_with_outliers() -> tuple[np.ndarray, np.ndarray]:
    """Two 2-D clusters, then 40 uniform outliers (all in the second process's half, so
    the halves' boxes differ), and the rows' (N, D) measurement variances."""
    rng = np.random.default_rng(2)
    inliers = np.concatenate([rng.normal(m, 0.6, (150, 2)) for m in (-2.0, 2.0)])
    rng.shuffle(inliers)
    x = np.concatenate([inliers, rng.uniform(-9.0, 9.0, (40, 2))])
    return x, rng.uniform(0.01, 0.2, x.shape)


@pytest.fixture(scope="module")
def process_results(tmp_path_factory) -> list[dict]:
    """Each process's results (npz) of both checks' fits, by check."""
    folder = tmp_path_factory.mktemp("processes")
    np.save(folder / "clusters.npy", clusters())
    x, variances = clusters_with_outliers()
    np.save(folder / "outliers.npy", x)
    np.save(folder / "variances.npy", variances)
    specs = []
    for process_id in range(PROCESSES):
        mixture = {
            "mode": "process",
            "data": str(folder / "clusters.npy"),
            "out": str(folder / f"mixture{process_id}.npz"),
            "configs": [CONFIG],
            "estimator": {**CONFIG, "random_state": 0},
        }
        background = {
            "mode": "process",
            "data": str(folder / "outliers.npy"),
            "errors": str(folder / "variances.npy"),
            "out": str(folder / f"background{process_id}.npz"),
            "configs": [],
            "estimator": BACKGROUND_ESTIMATOR,
        }
        specs.append({"jobs": [[str(WORKER), mixture], [str(WORKER), background]]})
    run_workers(None, process_group(specs))
    return [
        {check: np.load(folder / f"{check}{process_id}.npz") for check in ("mixture", "background")}
        for process_id in range(PROCESSES)
    ]


def test_two_processes_reach_the_single_process_answer(process_results):
    x = clusters()
    reference = em.fit_em(x, **CONFIG)
    for process_id, results in enumerate(process_results):
        out = results["mixture"]
        assert int(out["process_count"]) == PROCESSES
        assert int(out["local_rows"]) in (x.shape[0] // 2, x.shape[0] - x.shape[0] // 2)
        for method in ("sharded", "chunked"):
            # fit_em_sharded / fit_em_chunked, then GaussianMixture on this process's rows
            # (devices=jax.devices() / chunk_size): keys "weights" ... or "weights_" ...
            for prefix, suffix in ((f"0/{method}", ""), (f"estimator/{method}", "_")):
                for name in ("weights", "means", "covariances"):
                    np.testing.assert_allclose(
                        out[f"{prefix}/{name}{suffix}"],
                        reference.params[name],
                        rtol=0,
                        atol=EXACT,
                        err_msg=f"process {process_id}, {prefix}, {name}",
                    )
                bound = float(out[f"{prefix}/lower_bound{suffix}"])
                assert abs(bound - float(reference.lower_bound)) < EXACT
                assert int(out[f"{prefix}/n_iter{suffix}"]) == int(reference.n_iter) > 1


@pytest.mark.slow
def test_two_processes_fit_the_background_of_all_rows_with_measurement_errors(process_results):
    """The halves' boxes differ (the outliers lie in the second half), so a per-process
    box would give each process another volume and another fit."""
    x, variances = clusters_with_outliers()
    # the reference sees all rows: the chunked fit's initialization sample is all of them
    reference = GaussianMixture(**BACKGROUND_ESTIMATOR, chunk_size=97).fit(
        x, measurement_covariances=variances
    )
    memory = GaussianMixture(**BACKGROUND_ESTIMATOR).fit(x, measurement_covariances=variances)
    naive = GaussianMixture(**BACKGROUND_ESTIMATOR).fit(x)
    assert np.max(np.abs(naive.covariances_ - memory.covariances_)) > 1e-3  # S matters
    np.testing.assert_allclose(reference.means_, memory.means_, atol=1e-8)
    for process_id, results in enumerate(process_results):
        out = results["background"]
        assert int(out["process_count"]) == PROCESSES
        for method in ("sharded", "chunked"):
            for name in ("weights_", "means_", "covariances_"):
                np.testing.assert_allclose(
                    out[f"estimator/{method}/{name}"],
                    getattr(reference, name),
                    rtol=0,
                    atol=EXACT,
                    err_msg=f"process {process_id}, {method}, {name}",
                )
            bound = float(out[f"estimator/{method}/lower_bound_"])
            assert abs(bound - reference.lower_bound_) < EXACT

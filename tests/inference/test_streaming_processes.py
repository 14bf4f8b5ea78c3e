"""Two processes joined by ``jax.distributed`` fit ``GaussianMixture(background="uniform")``
on their halves of a .npy file, with the rows sharded over all devices
(``devices=jax.devices()``) and by chunks (``chunk_size``), and each row's measurement
variances beside it (extreme deconvolution): the background's box is that of all
processes' rows and the deconvolution statistics are summed across processes, so both
reach the single-process fit (1e-10 in float64). Uses the worker of test_multiprocess
(``shard_worker.py``)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from gaussmix import GaussianMixture

EXACT = 1e-10
WORKER = Path(__file__).with_name("shard_worker.py")
#: A hang (a process that never joins) must fail the test rather than block CI.
SUBPROCESS_TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason="this JAX build has no CPU collectives for multi-process computations",
)
def test_two_processes_fit_the_background_of_all_rows_with_measurement_errors(tmp_path):
    """The halves' boxes differ (the outliers lie in the second half), so a per-process
    box would give each process another volume and another fit."""
    rng = np.random.default_rng(2)
    clusters = np.concatenate([rng.normal(m, 0.6, (150, 2)) for m in (-2.0, 2.0)])
    rng.shuffle(clusters)
    x = np.concatenate([clusters, rng.uniform(-9.0, 9.0, (40, 2))])
    variances = rng.uniform(0.01, 0.2, x.shape)  # (N, D) measurement variances
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "errors.npy", variances)
    estimator = {
        "n_components": 2,
        "covariance_type": "full",
        "background": "uniform",
        "tol": 1e-8,
        "max_iter": 200,
        "random_state": 0,
    }
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    processes = []
    for process_id in range(2):
        spec = {
            "mode": "process",
            "data": str(tmp_path / "x.npy"),
            "errors": str(tmp_path / "errors.npy"),
            "out": str(tmp_path / f"process{process_id}.npz"),
            "configs": [],
            "port": port,
            "process_id": process_id,
            "num_processes": 2,
            "estimator": estimator,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(spec)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
            if process.returncode != 0:
                errors.append(stderr[-4000:])
    except subprocess.TimeoutExpired:
        errors.append(f"a process did not finish in {SUBPROCESS_TIMEOUT} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert not errors, "\n".join(errors)
    # the reference sees all rows: the chunked fit's initialization sample is all of them
    reference = GaussianMixture(**estimator, chunk_size=97).fit(
        x, measurement_covariances=variances
    )
    memory = GaussianMixture(**estimator).fit(x, measurement_covariances=variances)
    naive = GaussianMixture(**estimator).fit(x)
    assert np.max(np.abs(naive.covariances_ - memory.covariances_)) > 1e-3  # S matters
    np.testing.assert_allclose(reference.means_, memory.means_, atol=1e-8)
    for process_id in range(2):
        out = np.load(tmp_path / f"process{process_id}.npz")
        assert int(out["process_count"]) == 2
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

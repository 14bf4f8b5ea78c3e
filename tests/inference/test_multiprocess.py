"""Two processes joined by ``jax.distributed`` on 127.0.0.1, each reading its half of a
.npy file, both reach the single-process answer (1e-10 in float64), with the rows
sharded over the processes' devices (psum over Gloo) and by out-of-core chunks (host
statistics summed across processes), through the inference functions and through
``GaussianMixture(devices=jax.devices())`` / ``GaussianMixture(chunk_size=...)``."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from gaussmix.inference import em

EXACT = 1e-10
WORKER = Path(__file__).with_name("shard_worker.py")
#: A hang (a process that never joins) must fail the test rather than block CI.
SUBPROCESS_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason="this JAX build has no CPU collectives for multi-process computations",
)
def test_two_processes_reach_the_single_process_answer(tmp_path):
    rng = np.random.default_rng(1)  # the data of test_streaming and test_shard
    x = np.concatenate([rng.normal(m, s, (701, 3)) for m, s in ((-3, 1.0), (0, 0.5), (4, 1.5))])
    rng.shuffle(x)
    np.save(tmp_path / "x.npy", x)
    config = {"n_components": 3, "covariance_type": "full", "priors": None}
    config.update(tol=1e-8, max_iter=200)
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    processes = []
    for process_id in range(2):
        spec = {
            "mode": "process",
            "data": str(tmp_path / "x.npy"),
            "out": str(tmp_path / f"process{process_id}.npz"),
            "configs": [config],
            "port": port,
            "process_id": process_id,
            "num_processes": 2,
            "estimator": {**config, "random_state": 0},
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
    reference = em.fit_em(x, **config)
    for process_id in range(2):
        out = np.load(tmp_path / f"process{process_id}.npz")
        assert int(out["process_count"]) == 2
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

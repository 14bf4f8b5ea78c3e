"""One EM step, every way to get its statistics: the same fit to 1e-10 in float64.

In memory (``fit_em``: a scan over blocks), by chunks out of core (``fit_em_chunked``: a
host loop summing chunk statistics), over 4 CPU devices (``fit_em_sharded``: ``psum``
inside ``shard_map``) and over two processes joined by ``jax.distributed`` (each passing
its half of the rows; chunk statistics summed across processes, and rows sharded over
the processes' devices) run the one step of ``gaussmix.inference.em.core`` from the same
start, so only the statistics path differs: weights, means, covariances, lower bound
and iteration count agree for all four covariance types, on complete data and on data
with a fifth of its entries missing (``nan_policy="marginalize"``: expected statistics
from each chunk's, device's or process's own pattern table).

Several devices or processes must exist before JAX starts, so those fits run in fresh
interpreters (``tests/processes.py``, which starts JAX and joins the processes): this
file is also their worker script, one subprocess for the 4 devices and one per process.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from gaussmix.inference.em import fit_em  # noqa: E402
from gaussmix.inference.shard import fit_em_sharded  # noqa: E402
from gaussmix.inference.streaming import fit_em_chunked  # noqa: E402
from gaussmix.models.priors import COVARIANCE_SITES  # noqa: E402
from tests.processes import process_group, run_workers  # noqa: E402

#: The issue's bar. Every mode adds the same float64 terms in another order (blocks,
#: chunks, devices, processes): a relative rounding of ~1e-16 per sum, carried through
#: the M-step's divisions and the few dozen iterations EM takes to converge here.
EXACT = 1e-10
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CHUNK_ROWS = 50
FIELDS = ("weights", "means", "covariances", "lower_bound", "n_iter")


def data(holes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """201 rows (divisible by neither 2 nor 4) of three 2-D clusters, positive weights;
    with ``holes`` a fifth of the entries NaN (every row keeps one, none of the first
    three, which start the means)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(m, s, (67, 2)) for m, s in ((-3, 1.0), (0, 0.6), (4, 1.4))])
    rng.shuffle(x)
    weight = rng.uniform(0.5, 2.0, x.shape[0])
    if holes:
        missing = np.random.default_rng(8).random(x.shape) < 0.2
        missing[missing.all(axis=1), 0] = False
        missing[:3] = False
        x = np.where(missing, np.nan, x)
    return x, weight


#: (covariance type, with missing entries) of every comparison.
CASES = [
    (covariance_type, holes) for holes in (False, True) for covariance_type in COVARIANCE_TYPES
]


def key(covariance_type: str, holes: bool) -> str:
    return f"{covariance_type}{'/missing' if holes else ''}"


def options(x: np.ndarray, covariance_type: str) -> dict:
    """Options with a given start (all three inits: no data-dependent initialization),
    several EM iterations from the optimum."""
    n_components, n_features = 3, x.shape[1]
    precisions = {
        "full": np.stack([0.3 * np.eye(n_features)] * n_components),
        "tied": 0.3 * np.eye(n_features),
        "diag": np.full((n_components, n_features), 0.3),
        "spherical": np.full(n_components, 0.3),
    }[covariance_type]
    return {
        "n_components": n_components,
        "covariance_type": covariance_type,
        "tol": 1e-6,
        "max_iter": 300,
        "weights_init": np.full(n_components, 1 / n_components),
        "means_init": x[[0, 1, 2]],
        "precisions_init": precisions,
        "nan_policy": "marginalize",
    }


def summary(result, covariance_type: str) -> dict:
    return {
        "weights": np.asarray(result.params["weights"]),
        "means": np.asarray(result.params["means"]),
        "covariances": np.asarray(result.params[COVARIANCE_SITES[covariance_type]]),
        "lower_bound": np.asarray(result.lower_bound),
        "n_iter": np.asarray(result.n_iter),
    }


def assert_same_fit(got: dict, expected: dict, where: str) -> None:
    for name in FIELDS:
        np.testing.assert_allclose(
            got[name], expected[name], rtol=0, atol=EXACT, err_msg=f"{where}: {name}"
        )
    assert int(expected["n_iter"]) > 1, where  # EM moved: the statistics were used


@pytest.fixture(scope="module")
def in_memory() -> dict:
    fits = {}
    for covariance_type, holes in CASES:
        x, weight = data(holes)
        result = fit_em(x, sample_weight=weight, **options(x, covariance_type))
        fits[key(covariance_type, holes)] = summary(result, covariance_type)
    return fits


@pytest.mark.parametrize(("covariance_type", "holes"), CASES)
def test_chunked_equals_in_memory(in_memory, covariance_type, holes):
    x, weight = data(holes)
    result = fit_em_chunked(
        x, sample_weight=weight, chunk_rows=CHUNK_ROWS, **options(x, covariance_type)
    )
    expected = in_memory[key(covariance_type, holes)]
    assert_same_fit(summary(result, covariance_type), expected, "chunked")


def test_four_devices_equal_in_memory(in_memory, tmp_path):
    out = tmp_path / "devices.npz"
    run_workers(Path(__file__), [{"mode": "devices", "out": str(out)}], devices=4)
    results = np.load(out)
    assert int(results["device_count"]) == 4
    for covariance_type, holes in CASES:
        case = key(covariance_type, holes)
        got = {name: results[f"{case}/sharded/{name}"] for name in FIELDS}
        assert_same_fit(got, in_memory[case], f"{case}, 4 devices")


@pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason="this JAX build has no CPU collectives for multi-process computations",
)
def test_two_processes_equal_in_memory(in_memory, tmp_path):
    specs = process_group(
        [{"mode": "process", "out": str(tmp_path / f"process{index}.npz")} for index in range(2)]
    )
    run_workers(Path(__file__), specs)
    for index, spec in enumerate(specs):
        results = np.load(spec["out"])
        assert int(results["process_count"]) == 2
        for covariance_type, holes in CASES:
            case = key(covariance_type, holes)
            for method in ("chunked", "sharded"):
                got = {name: results[f"{case}/{method}/{name}"] for name in FIELDS}
                assert_same_fit(got, in_memory[case], f"{case}, process {index}, {method}")


# -- the worker ---------------------------------------------------------------------------


def devices_worker(spec: dict) -> dict:
    results = {"device_count": np.asarray(jax.device_count())}
    for covariance_type, holes in CASES:
        x, weight = data(holes)
        result = fit_em_sharded(x, sample_weight=weight, devices=4, **options(x, covariance_type))
        for name, value in summary(result, covariance_type).items():
            results[f"{key(covariance_type, holes)}/sharded/{name}"] = value
    return results


def process_worker(spec: dict) -> dict:
    results = {"process_count": np.asarray(jax.process_count())}
    for covariance_type, holes in CASES:
        x, weight = data(holes)
        bounds = np.linspace(0, x.shape[0], jax.process_count() + 1).astype(int)
        rows = slice(bounds[jax.process_index()], bounds[jax.process_index() + 1])
        # the start is the whole data's, as every process is given it
        fit_options = options(x, covariance_type)
        chunked = fit_em_chunked(
            x[rows], sample_weight=weight[rows], chunk_rows=CHUNK_ROWS, **fit_options
        )
        sharded = fit_em_sharded(x[rows], sample_weight=weight[rows], **fit_options)
        for method, result in (("chunked", chunked), ("sharded", sharded)):
            for name, value in summary(result, covariance_type).items():
                results[f"{key(covariance_type, holes)}/{method}/{name}"] = value
    return results


if __name__ == "__main__":
    worker_spec = json.loads(sys.argv[1])
    worker = devices_worker if worker_spec["mode"] == "devices" else process_worker
    np.savez(Path(worker_spec["out"]), **worker(worker_spec))

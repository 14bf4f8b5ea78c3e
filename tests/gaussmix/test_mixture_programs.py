"""The programs a GaussianMixture compiles: which, how many, and that they are stable.

Each check runs in a fresh Python process (what is compiled depends on what the process
compiled before) and reads JAX's own compile log (``jax_log_compiles``): names of the
compiled programs, never times. The pure-JAX path (``GAUSSMIX_NATIVE=0``) is measured.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The lines that record what a fresh process compiles (``compiled``).
RECORD = (Path(__file__).resolve().parents[1] / "compile_log.py").read_text()

#: Runs the stages named on the command line in one process, printing a JSON dict
#: {stage: [compiled program names]}.
SCRIPT = (
    RECORD
    + r"""
import json, sys
import numpy as np
import gaussmix

rng = np.random.default_rng(0)
def blobs(shift):
    return np.concatenate(
        [rng.normal(-3.0 + shift, 1.0, (150, 2)), rng.normal(3.0 + shift, 1.0, (150, 2))]
    ).astype(np.float32)

X = blobs(0.0)
fitted = {}

def first_fit():
    fitted["full"] = gaussmix.GaussianMixture(2).fit(X)

def second_fit():
    gaussmix.GaussianMixture(2, random_state=1).fit(blobs(0.5))

def other_types():
    for covariance_type in ("tied", "diag", "spherical"):
        gaussmix.GaussianMixture(2, covariance_type=covariance_type).fit(X)

def predict_score():
    model = fitted["full"]
    model.predict(X)
    model.predict_proba(X)
    model.score(X)
    model.score_samples(X)
    model.sample(5)
    model.bic(X)
    model.aic(X)

def bic_sweep():
    # three features: shapes no earlier stage compiled
    x = np.concatenate([X, rng.normal(size=(300, 1)).astype(np.float32)], axis=1)
    gaussmix.select_components(x, n_components=range(1, 6), covariance_type="diag", seed=0)

result = {}
for stage in sys.argv[1:]:
    del compiled[:]
    globals()[stage]()
    result[stage] = list(compiled)
print("PROGRAMS", json.dumps(result))
"""
)


def run_stages(*stages: str, env: dict | None = None) -> dict:
    """{stage: names of the programs it compiled} from a fresh process."""
    environment = {
        **os.environ,
        "GAUSSMIX_NATIVE": "0",
        "GAUSSMIX_COMPILATION_CACHE": "0",  # what a first call compiles, no cache
        "JAX_PLATFORMS": "cpu",
        **(env or {}),
    }
    environment.pop("JAX_ENABLE_X64", None)
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, *stages],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(row for row in completed.stdout.splitlines() if row.startswith("PROGRAMS "))
    return json.loads(line.removeprefix("PROGRAMS "))


@pytest.fixture(scope="module")
def programs() -> dict:
    return run_stages("first_fit", "second_fit", "predict_score", "other_types", "bic_sweep")


def test_first_fit_compiles_one_program(programs):
    # no op-by-op programs around the fit (the seed's key is built in NumPy)
    assert programs["first_fit"] == ["jit(_fit_program)"]


def test_second_fit_of_the_same_shapes_compiles_nothing(programs):
    assert programs["second_fit"] == []


def test_every_covariance_type_is_one_program(programs):
    assert programs["other_types"] == ["jit(_fit_program)"] * 3


def test_predict_and_scores_share_one_program(programs):
    # predict, predict_proba, score, score_samples, bic and aic: one program; sample: NumPy
    assert len(programs["predict_score"]) == 1


def test_bic_sweep_is_one_padded_program_and_the_best_refit(programs):
    # every K in one program (mixtures padded to the largest K), their log-likelihood and
    # criterion in one scoring program per covariance layout, then the best cell's
    # estimator fitted alone: no program per candidate
    assert programs["bic_sweep"] == [
        "jit(_fit_candidates)",
        "jit(_score_candidates)",
        "jit(_fit_program)",
    ]


LOWER_SCRIPT = r"""
import sys
import jax
import numpy as np
import gaussmix

jax.config.update("jax_dump_ir_to", sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
x = rng.normal(size=(300, 2)).astype(np.float32)
for covariance_type in ("full", "diag"):
    gaussmix.GaussianMixture(2, covariance_type=covariance_type, n_init=2).fit(x)
"""


def test_fit_programs_lower_to_the_same_text_in_two_processes(tmp_path):
    """The persistent cache can key the fit by its lowered text: no data, ids or fresh
    objects baked into it (data drawn with another seed in each process)."""
    environment = {
        **os.environ,
        "GAUSSMIX_NATIVE": "0",
        "GAUSSMIX_COMPILATION_CACHE": "0",
        "JAX_PLATFORMS": "cpu",
    }
    environment.pop("JAX_ENABLE_X64", None)
    texts = []
    for run in range(2):
        folder = tmp_path / f"run{run}"
        subprocess.run(
            [sys.executable, "-c", LOWER_SCRIPT, str(folder), str(run)],
            env=environment,
            check=True,
            capture_output=True,
        )
        dumps = sorted(Path(folder).glob("*_fit_program*.mlir"))
        texts.append([path.read_text() for path in dumps])
    assert len(texts[0]) == 2
    assert texts[0] == texts[1]

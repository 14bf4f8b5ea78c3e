"""A fit_peaks with the default priors runs none of NumPyro's code, whether its compiled
program is cached or not (issue 17).

NumPyro's import (SciPy's special, linalg and fft modules, mostly) took a third of a warm
first fit. fit_peaks reads the program's sites, observed site and family from its
:class:`~gaussmix.models.peaks.PeakModel` (:func:`gaussmix.peaks.fit.map_structure`)
instead of tracing the program, keeps the default priors' bounds as NumPy numbers, and
the modules on its path import NumPyro where a program is traced. Compiling the fit traces
no NumPyro either: the peak program's registered closed form
(:data:`gaussmix.inference.map.closed_form.PEAKS_CLOSED_FORM`) gives its priors and
observed site (tested equal to the trace in ``tests/inference/test_map_without_numpyro.py``).
The first test holds the structure equal to the trace for every kind of model; the second
runs a cold and a warm fit in fresh processes.

Nor does it import ``scipy.linalg``: the fit factors its curvature without LAPACK
(:func:`gaussmix.inference.map.levenberg_marquardt.inverse_cholesky`), so neither lowering
its program nor loading it sets up JAX's LAPACK kernels, whose set-up imports SciPy's
linear algebra (0.1 s, half a warm first fit).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gaussmix import fit_peaks
from gaussmix.inference.map.fit import probe_program
from gaussmix.models.lineshapes import LINESHAPES
from gaussmix.models.peaks import peak_model
from gaussmix.models.peaks import peaks as peak_program
from gaussmix.peaks.fit import map_structure

X = np.linspace(0.0, 10.0, 60)

MODELS = [
    *[((name,), None, "normal", {}, {}) for name in LINESHAPES],
    (("gaussian", "lorentzian"), "constant", "student_t", {}, {}),
    (("voigt", "pseudo_voigt"), "linear", "poisson", {}, {}),
    (("gaussian",), "exponential", "normal", {}, {}),
    (("skewed_gaussian", "gaussian"), 3, "student_t", {}, {"baseline_c2": 0.0}),
    (("gaussian", "gaussian"), "shirley", "normal", {"peak1_sigma": "peak0_sigma"}, {}),
    (("voigt_area", "doniach_sunjic"), "tougaard", "poisson", {}, {"peak1_alpha": 0.1}),
    (("gaussian", "gaussian", "lorentzian"), "linear", "normal",
     {"peak1_sigma": "peak0_sigma", "peak2_center": "peak0_center"},
     {"peak0_height": 2.0, "baseline_c1": 0.5}),
]  # fmt: skip


@pytest.mark.parametrize(("lineshapes", "baseline", "likelihood", "ties", "fixed"), MODELS)
@pytest.mark.parametrize("masked", [False, True])
def test_the_structure_from_the_peak_model_is_the_programs_trace(
    lineshapes, baseline, likelihood, ties, fixed, masked
):
    """Sites (names, shapes, order), observed site and family: what fit_map's probe finds
    by tracing the program, for every lineshape, baseline kind, likelihood, tie and fixed
    value, with and without a mask."""
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed)
    y = np.round(np.exp(-0.5 * (X - 5.0) ** 2) * 10.0 + 2.0)
    init = {name: np.float64(1.0) for name in model.site_names}
    kwargs = {"lineshapes": lineshapes, "baseline": baseline, "likelihood": likelihood,
              "ties": ties, "fixed": fixed}  # fmt: skip
    if likelihood == "student_t":
        kwargs["degrees_of_freedom"] = np.float64(4.0)
    if masked:
        kwargs["mask"] = X < 9.0
    latent, observed, family = probe_program(peak_program, X, y, init, kwargs)
    expected_latent, expected_observed, expected_family = map_structure(model)
    assert list(expected_latent) == latent
    assert expected_observed == observed
    assert expected_family is family
    assert family.name == likelihood


CHILD = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import gaussmix
from gaussmix.inference import compilation
x, y = (np.asarray(v) for v in json.loads(sys.argv[1]))
fit = gaussmix.fit_peaks(x, y, ("gaussian", "lorentzian"), baseline="linear",
                         likelihood=sys.argv[2])
values = {name: float(np.asarray(v)).hex() for name, v in fit.params.items()}
values["covariance"] = [float(v).hex() for v in np.ravel(fit.covariance)]
print(json.dumps({"values": values, "numpyro": "numpyro" in sys.modules,
                  "scipy.linalg": "scipy.linalg" in sys.modules,
                  "counts": compilation.statistics()}))
"""


def _spectrum() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = (3.0 * np.exp(-0.5 * ((X - 3.0) / 0.6) ** 2) + 2.0 / (1.0 + ((X - 7.0) / 0.5) ** 2)
         + 0.2 * X + 1.0 + 0.05 * rng.normal(size=X.size))  # fmt: skip
    return X, y


@pytest.mark.parametrize("likelihood", ["normal", "student_t"])
def test_a_cold_and_a_warm_fit_in_fresh_processes_import_no_numpyro(tmp_path, likelihood):
    """A fresh process with an empty cache compiles the fit, a second one loads it:
    neither imports NumPyro or SciPy's linear algebra, and both give this process's fit,
    bit for bit."""
    x, y = _spectrum()
    environment = {**os.environ, "GAUSSMIX_CACHE_DIR": str(tmp_path / "cache")}
    environment.pop("GAUSSMIX_COMPILATION_CACHE", None)
    runs = []
    for _ in ("cold", "warm"):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps([x.tolist(), y.tolist()]), likelihood],
            capture_output=True, text=True, env=environment, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["counts"]["compiled"] >= 1, cold["counts"]
    assert not cold["numpyro"], "a cold fit_peaks (compiling its program) imported numpyro"
    assert warm["counts"]["compiled"] == 0, warm["counts"]
    assert not warm["numpyro"], "a warm fit_peaks imported numpyro"
    for run, name in ((cold, "cold"), (warm, "warm")):
        assert not run["scipy.linalg"], f"a {name} fit_peaks set up LAPACK (scipy.linalg)"
    assert jax.config.jax_enable_x64  # the children's precision, as the suite's conftest
    fit = fit_peaks(x, y, ("gaussian", "lorentzian"), baseline="linear", likelihood=likelihood)
    here = {name: float(np.asarray(v)).hex() for name, v in fit.params.items()}
    here["covariance"] = [float(v).hex() for v in np.ravel(fit.covariance)]
    assert cold["values"] == here
    assert warm["values"] == here

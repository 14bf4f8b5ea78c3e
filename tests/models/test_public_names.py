"""`gaussmix.models` exports the two programs DESIGN's public contract names."""

import subprocess
import sys

import jax
import numpy as np
from numpyro import handlers

import gaussmix.models
from gaussmix.models import gaussian_mixture, peaks


def test_models_exports_the_two_programs():
    assert gaussmix.models.__all__ == ["gaussian_mixture", "peaks"]
    from gaussmix.models.mixture import gaussian_mixture as mixture_program
    from gaussmix.models.peaks import peaks as peaks_program

    assert gaussian_mixture is mixture_program
    assert peaks is peaks_program


def test_exported_programs_have_the_contract_sites():
    x = np.random.default_rng(0).normal(size=(20, 2))
    mixture_trace = handlers.trace(handlers.seed(gaussian_mixture, jax.random.key(0))).get_trace(
        x, n_components=3, covariance_type="diag"
    )
    assert {"weights", "means", "variances", "x"} <= set(mixture_trace)
    assert mixture_trace["means"]["value"].shape == (3, 2)

    grid = np.linspace(0.0, 10.0, 30)
    peaks_trace = handlers.trace(handlers.seed(peaks, jax.random.key(0))).get_trace(
        grid, lineshapes=("gaussian",), baseline="linear", y_range=(0.0, 5.0)
    )
    expected = {"peak0_height", "peak0_center", "peak0_sigma", "peak0_area", "peak0_fwhm"}
    assert expected | {"baseline_c0", "baseline_c1", "sigma", "y"} <= set(peaks_trace)


def test_importing_the_programs_stays_light():
    # The contract import must not pull in the back ends or plotting (DESIGN: dependencies
    # point gaussmix -> inference -> models; matplotlib only when plotting).
    code = (
        "import sys; from gaussmix.models import gaussian_mixture, peaks; "
        "print(any(m.startswith('gaussmix.inference') for m in sys.modules), "
        "'matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]

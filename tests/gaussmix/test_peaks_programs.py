"""The programs a peak fit compiles: only the fit's own, once per model and shapes.

Everything around the compiled fit (starting values, checks, prior bounds, the naming of
the results, AIC/BIC) runs in NumPy; an operation on a JAX array there would compile a
program of its own (~20 ms each, 42 of them before). Each first fit runs in a fresh
interpreter, so that the count does not depend on what this process compiled before;
the programs are named by JAX's compile log (``jax_log_compiles``), which names a
program even when a persistent compilation cache serves its executable.
"""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

#: Without gaussmix's compilation cache: the count is of the programs a process needs.
UNCACHED = {**os.environ, "GAUSSMIX_COMPILATION_CACHE": "0", "JAX_PLATFORMS": "cpu"}

#: The worker: runs one scenario twice (the second time on other data of the same
#: shapes) and prints, as JSON, the programs each run compiled, by name, and whether the
#: NUTS driver (inference/mcmc) compiled them.
WORKER = textwrap.dedent(
    """
    import json, logging, os, re, sys, traceback, warnings

    import jax

    scenario, precision = sys.argv[1], sys.argv[2]
    jax.config.update("jax_enable_x64", precision == "float64")
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    import gaussmix
    from gaussmix.inference.map import fit_map

    compiled = []

    class Programs(logging.Handler):
        def emit(self, record):
            found = re.search(r"Compiling (\\S+)", record.getMessage())
            if found:
                files = [frame.filename for frame in traceback.extract_stack()]
                nuts = any(os.sep + os.path.join("inference", "mcmc") in f for f in files)
                compiled.append([found.group(1), nuts])

    logging.getLogger("jax").addHandler(Programs())
    logging.getLogger("jax").setLevel(logging.WARNING)
    jax.config.update("jax_log_compiles", True)

    def line(x, y, mask=None):
        slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
        intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        observation = dist.Normal(slope * x + intercept, sigma)
        numpyro.sample("y", observation if mask is None else observation.mask(mask), obs=y)

    x = np.linspace(0.0, 10.0, 120)

    def spectrum(seed):
        rng = np.random.default_rng(seed)
        height, center = 2.0 + rng.uniform(), 4.0 + rng.uniform()
        curve = height * np.exp(-0.5 * ((x - center) / 0.6) ** 2)
        curve = curve + 1.5 * np.exp(-0.5 * ((x - 7.0) / 0.5) ** 2) + 0.1 * x + 1.0
        return curve + 0.02 * rng.normal(size=x.size)

    def run(seed):
        y = spectrum(seed)
        if precision == "float32":
            y = y.astype(np.float32)
        options = dict(peaks=("gaussian", "gaussian"), baseline="linear")
        if scenario == "single":
            return gaussmix.fit_peaks(x, y, **options)
        if scenario == "omitted":
            y[[5, 17]] = np.nan
            return gaussmix.fit_peaks(x, y, nan_policy="omit", **options)
        if scenario == "batch":
            y = np.stack([y, spectrum(seed + 10), spectrum(seed + 20)])
            y[1, 3] = np.nan
            return gaussmix.fit_peaks(x, y, nan_policy="omit", **options)
        if scenario == "options":
            init = {"peak0_center": 4.5, "peak1_sigma": 0.5}
            priors = {"peak0_center": dist.Normal(4.5, 1.0)}
            options |= dict(init=init, fixed={"baseline_c1": 0.1}, priors=priors)
            options |= dict(likelihood="student_t")
            return gaussmix.fit_peaks(x, y, **options)
        if scenario == "fit_map":
            keep = np.ones(x.size, bool)
            keep[3] = False
            start = {"slope": 0.0, "intercept": 0.0, "sigma": 1.0}
            return fit_map(line, x, y, start, mask=keep)
        if scenario == "curves":
            fit = gaussmix.fit_peaks(x, y, **options)
            grid = np.linspace(0.0, 10.0, 333)
            return fit.components(grid), fit.predict(grid)
        if scenario == "mcmc":
            nuts = dict(num_warmup=20, num_samples=20, num_chains=1, progress_bar=False)
            return gaussmix.fit_peaks(x, y, backend="mcmc", **options, **nuts)
        raise ValueError(scenario)

    warnings.simplefilter("ignore")
    runs = []
    for seed in (0, 1):
        compiled.clear()
        run(seed)
        runs.append(list(compiled))
    print(json.dumps(runs))
    """
)


def _programs(scenario: str, precision: str = "float64") -> tuple[list, list]:
    """The programs (name, compiled by the NUTS driver) of a first and a second run of
    ``scenario`` in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, scenario, precision],
        capture_output=True,
        text=True,
        env=UNCACHED,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    first, second = json.loads(completed.stdout.strip().splitlines()[-1])
    return first, second


#: The programs of a first single-spectrum fit_peaks: the Levenberg-Marquardt fit and the
#: delta method of the derived quantities (areas, FWHMs) on its Laplace covariance.
FIT_PEAKS = Counter({"jit(_fit_batch)": 1, "jit(_delta)": 1})


@pytest.mark.parametrize(
    ("scenario", "precision"),
    [
        ("single", "float64"),
        ("single", "float32"),
        ("omitted", "float64"),
        ("omitted", "float32"),
        ("batch", "float64"),
        ("options", "float64"),
    ],
)
def test_a_first_fit_compiles_the_fit_and_the_delta_method_only(scenario, precision):
    first, second = _programs(scenario, precision)
    assert Counter(name for name, _ in first) == FIT_PEAKS
    assert second == []  # other data of the same shapes: nothing new


def test_a_fits_curves_and_components_are_one_program_each():
    """A plot's curves: each component and the whole model, each one compiled program
    (operation by operation they were about 27 programs, compiled again in every
    process, since such programs are not in gaussmix's cache)."""
    first, second = _programs("curves")
    expected = FIT_PEAKS + Counter({"jit(component_curves)": 1, "jit(mean_curve)": 1})
    assert Counter(name for name, _ in first) == expected
    assert second == []


def test_fit_map_of_a_users_program_compiles_one_program():
    first, second = _programs("fit_map")
    assert Counter(name for name, _ in first) == Counter({"jit(_fit_batch)": 1})
    assert second == []


def test_the_mcmc_path_compiles_the_map_fit_nuts_and_the_posterior_curve():
    """Around the NUTS driver's own programs: the MAP fit that starts the chains (no
    delta method: the derived quantities come from the draws) and the posterior mean
    curve for the residual sum of squares."""
    first, second = _programs("mcmc")
    ours = Counter(name for name, nuts in first if not nuts)
    assert ours == Counter({"jit(_fit_batch)": 1, "jit(mean_curve)": 1})
    assert any(nuts for _, nuts in first)
    assert second == []


#: Prints a digest of the lowered text of the programs of gaussmix/peaks: the delta method
#: (derived quantities and an integral, with fixed values and ties) and the curve.
LOWERED = textwrap.dedent(
    """
    import hashlib, json

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from gaussmix.models.peaks import peak_model
    from gaussmix.peaks import result

    model = peak_model(
        ("voigt", "gaussian"), "linear", "normal",
        {"peak1_sigma": "peak0_sigma"}, {"baseline_c1": 0.5},
    )
    names = model.free_names
    free = np.linspace(0.5, 1.5, len(names))
    covariance = np.eye(len(names)) * 0.01
    fixed = {"baseline_c1": np.asarray(0.5)}
    free_values = dict(zip(names, free))
    texts = {
        "derived": result._delta_program.lower(
            model, names, ("derived", model.derived_names), free, covariance, fixed,
            np.zeros(2),
        ).as_text(),
        "integral": result._delta_program.lower(
            model, names, ("integral", (0, 1), True), free, covariance, fixed,
            np.array([-1.0, np.inf]),
        ).as_text(),
        "curve": result._curve_program.lower(
            np.linspace(0.0, 1.0, 7), model, result.resolve_on_host(model, free_values, fixed)
        ).as_text(),
    }
    print(json.dumps({k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}))
    """
)


def test_the_lowered_programs_are_the_same_in_two_fresh_processes():
    """What a persistent compilation cache keys on: no object identities, closures or
    data baked in."""
    digests = []
    for _ in range(2):
        completed = subprocess.run([sys.executable, "-c", LOWERED], capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr[-4000:]
        digests.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert digests[0] == digests[1]


@pytest.mark.parametrize("x64", [True, False])
@pytest.mark.parametrize(
    ("lineshapes", "baseline"),
    [
        (("gaussian", "voigt_area", "pseudo_voigt", "skewed_gaussian", "lorentzian"), 3),
        (("voigt",), "exponential"),
    ],
)
def test_default_priors_on_host_are_the_programs(x64, lineshapes, baseline):
    """The NumPy twin of models.peaks.default_priors that the host-side checks use: the
    same boxes and noise scale, in the same dtype, for every kind of parameter, for one
    spectrum and per spectrum of a batch (a flat one and negative values included). Equal
    to the last bit or two: XLA divides an array by a scalar through the reciprocal."""
    import jax
    import numpy as np
    import numpyro.distributions as dist

    from gaussmix.models.peaks import default_priors, peak_model
    from gaussmix.peaks.checks import HalfNormalPrior, UniformPrior, default_priors_on_host

    model = peak_model(lineshapes, baseline)
    ranges = [
        ((0.0, 10.0), (np.float64(-0.3), np.float64(2.7))),
        ((-3.0, 1e-3), (np.array([0.0, -5.0, 2.0]), np.array([1.0, -1.0, 2.0]))),
        ((np.float64(4.0), np.float64(4.5)), (np.float64(1e30), np.float64(3e30))),
    ]
    with jax.enable_x64(x64):
        for x_range, y_range in ranges:
            expected = default_priors(model, x_range, y_range)
            got = default_priors_on_host(model, x_range, y_range)
            assert list(got) == list(expected)
            for name, prior in expected.items():
                host = UniformPrior if isinstance(prior, dist.Uniform) else HalfNormalPrior
                assert type(got[name]) is host
                # the host's numbers, as NumPyro's distribution (shared fits' programs)
                assert type(got[name].distribution()) is type(prior)
                fields = ("low", "high") if isinstance(prior, dist.Uniform) else ("scale",)
                for field in fields:
                    want = np.asarray(getattr(prior, field))
                    have = np.asarray(getattr(got[name], field))
                    assert have.dtype == want.dtype, (name, field)
                    np.testing.assert_allclose(
                        have, want, rtol=2 * np.finfo(want.dtype).eps, err_msg=f"{name}.{field}"
                    )


@pytest.mark.parametrize("x64", [True, False])
def test_the_programs_data_ranges_are_numpys_nanmin_and_nanmax(x64):
    """models.peaks.data_ranges (the default priors' y range, inside every compiled fit)
    takes min and max over the points that count, not jnp.nanmin and jnp.nanmax (5x
    slower on XLA CPU): the same numbers as NumPy's nanmin and nanmax of the unmasked
    points, for one spectrum and a batch, with NaN and infinite values, a row without a
    point that counts (NaN) and one whose points are all infinite."""
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np

    from gaussmix.models.peaks import data_ranges

    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 40))
    mask = rng.random((6, 40)) > 0.3
    y[1, 3], y[2, :], y[3, 7], y[5, :] = np.nan, np.nan, -np.inf, np.inf
    mask[4, :] = False
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        x = jnp.linspace(-2.0, 5.0, 40, dtype=dtype)
        for batch in (y, y[0]):
            for given in (None, mask if batch.ndim == 2 else mask[0]):
                values = batch if given is None else np.where(given, batch, np.nan)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
                    expected = np.nanmin(values, axis=-1), np.nanmax(values, axis=-1)
                mask_arg = None if given is None else jnp.asarray(given)
                ranges = data_ranges(x, jnp.asarray(batch, dtype), mask_arg, None)
                assert (float(ranges[0]), float(ranges[1])) == (-2.0, 5.0)
                for got, want in zip(ranges[2:], expected, strict=True):
                    np.testing.assert_array_equal(np.asarray(got), want.astype(dtype))

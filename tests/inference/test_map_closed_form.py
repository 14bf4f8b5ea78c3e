"""The MAP back end's closed-form Jacobian (:mod:`gaussmix.inference.map.closed_form`)
against forward mode through the program, the same fits either way, and the compiled fit's
program the same in two fresh processes (a persistent cache can key on it)."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from gaussmix.inference.map import batch, closed_form, fit_map
from gaussmix.inference.map.families import FAMILIES
from gaussmix.inference.map.problem import MAPProblem, Sites, jacobian
from gaussmix.models.peaks import location_and_jacobian, peak_model, peaks


@pytest.fixture
def peaks_closed_form(monkeypatch):
    """The peak program's closed form registered for this test only."""
    monkeypatch.setattr(closed_form, "_REGISTRY", {})
    closed_form.register_location_jacobian(peaks, location_and_jacobian)


def forward_mode_only(monkeypatch):
    """No closed form registered: the compiled fit's key changes with it, so a fit after
    this compiles the forward-mode program rather than reusing the closed-form one."""
    monkeypatch.setattr(closed_form, "_REGISTRY", {})


MODELS = [
    (("gaussian", "lorentzian"), "linear", "normal", {}, {}),
    (("pseudo_voigt", "voigt", "skewed_gaussian"), 2, "student_t", {"peak1_center": "peak0_center"}, {}),
    (("gaussian", "gaussian", "voigt_area"), "exponential", "poisson", {"peak1_sigma": "peak0_sigma"}, {"peak0_height": 3.0}),
]  # fmt: skip


def start_values(model, rng):
    kinds = {"height": 2.0, "area": 3.0, "fraction": 0.3, "shape": 1.5}
    values = {}
    for name in model.free_names:
        kind = model.kind(name)
        if kind == "center":
            values[name] = rng.uniform(2.0, 8.0)
        elif kind == "width":
            values[name] = rng.uniform(0.3, 1.5)
        else:
            values[name] = kinds.get(kind, 0.01 * rng.normal())
    return values


@pytest.mark.parametrize("lineshapes, baseline, likelihood, ties, fixed", MODELS)
def test_closed_form_jacobian_matches_forward_mode(
    monkeypatch, peaks_closed_form, lineshapes, baseline, likelihood, ties, fixed
):
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed)
    rng = np.random.default_rng(1)
    x = jnp.linspace(0.0, 10.0, 64)
    if likelihood == "poisson":
        y = jnp.asarray(rng.poisson(3.0, 64), jnp.float64)
    else:
        y = jnp.asarray(rng.normal(size=64))
    program = functools.partial(
        peaks, lineshapes=lineshapes, baseline=baseline, likelihood=likelihood, ties=ties
    )
    assert closed_form.location_jacobian_of(program) is not None
    kwargs = {"fixed": {k: jnp.asarray(v) for k, v in fixed.items()}} if fixed else {}
    names = model.site_names
    noise_index = names.index("sigma") if "sigma" in names else -1
    sites = Sites(names, tuple(() for _ in names), noise_index)
    family = FAMILIES[likelihood]
    values = start_values(model, rng)
    theta = jnp.asarray([values[name] for name in model.free_names])
    noise = jnp.asarray(0.7)
    spectrum = MAPProblem(program, sites, "y", family, x, y, kwargs).with_priors(theta, noise)

    # Compiled, as the fit runs them: operation by operation, these Jacobians compiled
    # hundreds of small programs (the three models: 33.6 CPU s, compiled 21.0).
    def compiled_jacobian():
        return jax.jit(lambda t, n: jacobian(spectrum, t, n))(theta, noise)

    closed, closed_evaluation = compiled_jacobian()
    forward_mode_only(monkeypatch)
    forward, forward_evaluation = compiled_jacobian()
    assert closed.shape == forward.shape == (64, len(model.free_names))
    scale = float(jnp.max(jnp.abs(forward)))
    np.testing.assert_allclose(closed, forward, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(
        closed_evaluation.location, forward_evaluation.location, rtol=1e-14, atol=1e-14
    )
    for field in ("log_prior", "support", "mask", "prior_gradient", "prior_hessian"):
        np.testing.assert_array_equal(
            getattr(closed_evaluation, field), getattr(forward_evaluation, field)
        )


def test_the_peak_program_comes_with_its_closed_form():
    """Registered by default, for the program itself and for fit_peaks' partials of it,
    with a fingerprint that names it in every process (the compiled fit's key); None
    unregisters its location and Jacobian only (forward mode; the priors and observation
    stay), and registering it again restores the very closed form."""
    from gaussmix.inference.program_keys import fingerprint
    from gaussmix.models.peaks import latent_priors, observed_parts

    program = functools.partial(
        peaks, lineshapes=("gaussian",) * 3, baseline="linear", likelihood="normal", ties={}
    )
    registered = closed_form.PEAKS_CLOSED_FORM
    assert registered == (location_and_jacobian, latent_priors, observed_parts)
    assert closed_form.registered_function(peaks) is registered
    assert closed_form.registered_function(program) is registered
    text = fingerprint(registered)
    assert text is not None and "0x" not in text  # named, not by an address
    assert "gaussmix.models.peaks.latent_priors" in text
    try:
        closed_form.register_location_jacobian(peaks, None)
        assert closed_form.registered_function(program) == registered._replace(
            location_jacobian=None
        )
        assert closed_form.location_jacobian_of(program) is None
        assert closed_form.closed_form_of(program).priors.func is latent_priors
    finally:
        closed_form.register_location_jacobian(peaks, location_and_jacobian)
    assert closed_form.registered_function(program) == registered
    assert hash(closed_form.registered_function(program)) == hash(registered)


def test_a_closed_form_without_parts_unregisters_the_program(monkeypatch):
    monkeypatch.setattr(closed_form, "_REGISTRY", {})
    closed_form.register_closed_form(peaks, closed_form.PEAKS_CLOSED_FORM)
    assert closed_form.registered_function(peaks) == closed_form.PEAKS_CLOSED_FORM
    closed_form.register_closed_form(peaks, closed_form.ClosedForm())
    assert closed_form.registered_function(peaks) is None
    closed_form.register_location_jacobian(peaks, location_and_jacobian)
    closed_form.register_location_jacobian(peaks, None)
    assert closed_form.registered_function(peaks) is None


def test_a_user_program_without_a_closed_form_uses_forward_mode(monkeypatch):
    monkeypatch.setattr(closed_form, "_REGISTRY", {})

    def line(x, y):
        import numpyro

        slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(slope * x, 1.0), obs=y)

    assert closed_form.location_jacobian_of(line) is None
    assert closed_form.location_jacobian_of(functools.partial(line, np.ones(3))) is None


def test_fits_are_the_same_with_and_without_the_closed_form(monkeypatch, peaks_closed_form):
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 10.0, 120)
    truth = (3.0, 3.2, 0.5, 2.0, 6.5, 0.9, 0.4, 0.05)
    y = (
        truth[0] * np.exp(-0.5 * ((x - truth[1]) / truth[2]) ** 2)
        + truth[3] / (1.0 + ((x - truth[4]) / truth[5]) ** 2)
        + truth[6]
        + truth[7] * x
        + rng.normal(0.0, 0.05, (3, x.size))
    )
    program = functools.partial(
        peaks, lineshapes=("gaussian", "lorentzian"), baseline="linear", likelihood="normal",
        ties={},
    )  # fmt: skip
    names = ("peak0_height", "peak0_center", "peak0_sigma", "peak1_height", "peak1_center")
    names += ("peak1_gamma", "baseline_c0", "baseline_c1")
    init = {name: value * 1.05 for name, value in zip(names, truth, strict=True)}
    init["sigma"] = 0.1
    closed = fit_map(program, x, y, init)
    forward_mode_only(monkeypatch)
    forward = fit_map(program, x, y, init)
    assert np.all(np.asarray(closed.converged)) and np.all(np.asarray(forward.converged))
    np.testing.assert_allclose(closed.rss, forward.rss, rtol=1e-12)
    for name in names:
        np.testing.assert_allclose(closed.params[name], forward.params[name], rtol=1e-8)


def test_registering_a_closed_form_compiles_the_fit_anew(monkeypatch):
    """The compiled fit is keyed by the registered closed form: a fit after registering
    one does not reuse the forward-mode program of the same call (nor the reverse)."""
    monkeypatch.setattr(closed_form, "_REGISTRY", {})
    x = np.linspace(0.0, 10.0, 40)
    y = 2.0 * np.exp(-0.5 * ((x - 5.0) / 0.8) ** 2) + 0.01 * np.sin(7.0 * x)
    program = functools.partial(
        peaks, lineshapes=("gaussian",), baseline=None, likelihood="normal", ties={}
    )
    init = {"peak0_height": 1.8, "peak0_center": 5.1, "peak0_sigma": 0.9, "sigma": 0.1}
    fit_map(program, x, y, init)
    compiled = batch._fit_batch_program_for.cache_size()
    closed_form.register_location_jacobian(peaks, location_and_jacobian)
    fit_map(program, x, y, init)
    assert batch._fit_batch_program_for.cache_size() == compiled + 1
    fit_map(program, x, y, init)
    assert batch._fit_batch_program_for.cache_size() == compiled + 1


LOWERED_TEXT = textwrap.dedent(
    """
    import hashlib, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import numpyro.distributions as dist
    import gaussmix
    from gaussmix.inference.map import batch

    texts = []
    programs = batch._fit_batch_program_for  # the MAP fit's jitted program, by work

    def spy(work):
        program = programs(work)

        def lowered_and_run(*arguments):
            texts.append(program.lower(*arguments).as_text())
            return program(*arguments)

        return lowered_and_run

    batch._fit_batch_program_for = spy
    x = np.linspace(0.0, 10.0, 60)
    y = 3.0 * np.exp(-0.5 * ((x - 4.0) / 0.7) ** 2) + 0.1 * x
    y = y + np.random.default_rng(0).normal(0.0, 0.05, x.size)
    gaussmix.fit_peaks(x, y, ("gaussian", "lorentzian"), baseline="linear",
                       priors={"peak0_sigma": dist.Gamma(2.0, 2.0)})
    print(hashlib.sha256(texts[0].encode()).hexdigest(), len(texts[0]))
    """
)


def test_the_compiled_fit_lowers_to_the_same_program_in_every_process():
    """Stable static arguments and no data baked in: two fresh processes, with different
    string hash seeds, lower the main fit (user priors included) to the same text."""
    digests = []
    for seed in ("1", "2"):
        environment = dict(os.environ, PYTHONHASHSEED=seed, GAUSSMIX_NATIVE="0")
        completed = subprocess.run(
            [sys.executable, "-c", LOWERED_TEXT],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        digests.append(completed.stdout.split()[-2])
    assert digests[0] == digests[1]

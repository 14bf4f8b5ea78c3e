"""The default priors without NumPyro (:mod:`gaussmix.models.peak_priors`) against NumPyro's
``Uniform`` and ``HalfNormal``: the same log densities, derivatives and supports, bit for
bit, inside, on and outside the support (there as NumPyro's without validation, the
priors the MAP back end's compiled loop evaluated), in float32 and float64; and the boxes
the same as :func:`gaussmix.models.peaks.default_priors` builds as NumPyro
distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from gaussmix.models.peak_priors import HalfNormalPrior, UniformPrior, default_prior_boxes
from gaussmix.models.peaks import default_priors, peak_model

# Inside, on both bounds, just outside, far out in both tails, and not finite.
VALUES = [-1e30, -3.0, -1e-300, 0.0, 1e-300, 0.3, 1.7, 2.5, 2.5000001, 40.0, 1e30]
VALUES += [np.inf, -np.inf, np.nan]
PAIRS = [
    (UniformPrior(0.0, 2.5), lambda: dist.Uniform(0.0, 2.5)),
    (UniformPrior(-3.0, 1.7), lambda: dist.Uniform(-3.0, 1.7)),
    (HalfNormalPrior(0.3), lambda: dist.HalfNormal(0.3)),
    (HalfNormalPrior(1e-3), lambda: dist.HalfNormal(1e-3)),
]


def _as(prior, dtype):
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), prior)


@pytest.mark.filterwarnings("ignore:Out-of-support values:UserWarning")  # NumPyro's, eager
@pytest.mark.parametrize("x64", [True, False])
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_log_prob_support_and_derivatives_are_numpyros(x64, index):
    """Equal to the last bit, eager and compiled: the log density, its first and second
    derivative (NumPyro's without validation everywhere; with its default validation,
    which gives -inf outside the support, wherever the support holds), and the support
    (closed interval for the box, positive for the scale)."""
    ours, theirs = PAIRS[index]
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        ours = _as(ours, dtype)
        parameters = [jnp.asarray(v, dtype) for v in _parameters(theirs())]
        plain = type(theirs())(*parameters, validate_args=False)
        validated = type(theirs())(*parameters)
        values = jnp.asarray(VALUES, dtype)

        def terms(prior, values):
            def log_prob(v):
                return prior.log_prob(v)

            slope = jax.vmap(jax.grad(log_prob))(values)
            curvature = jax.vmap(jax.grad(jax.grad(log_prob)))(values)
            return prior.log_prob(values), slope, curvature, prior.support(values)

        # Compiled with the prior closed over: a NumPyro distribution passed as an argument
        # of a jit loses its default validation (its pytree does not carry the flag).
        # where validation changes nothing: inside the support and finite (the
        # HalfNormal's inner Normal also validates that its value is real)
        inside = np.asarray(validated.support(values)) & np.isfinite(np.asarray(values))
        assert inside.any() and not inside.all()
        for compiled in (False, True):

            def run(prior, compiled=compiled):
                if compiled:
                    return jax.jit(lambda values: terms(prior, values))(values)
                return terms(prior, values)

            # NumPyro's without validation: the HalfNormal's inner Normal validates unless
            # the default is off where it is evaluated (a flag read from its class).
            with numpyro.validation_enabled(False):
                want = run(plain)
            got, checked = run(ours), run(validated)
            names = ("log_prob", "slope", "curvature", "support")
            for name, a, b, c in zip(names, got, want, checked, strict=True):
                assert a.dtype == b.dtype == c.dtype, name
                np.testing.assert_array_equal(a, b, err_msg=f"{name}, compiled: {compiled}")
                np.testing.assert_array_equal(a[inside], c[inside], err_msg=name)
            outside = ~np.asarray(validated.support(values))
            assert np.isneginf(np.asarray(checked[0])[outside]).all()  # validation's -inf
        # the host path of the support (NumPy in, NumPy out), as NumPyro's constraint
        host = np.asarray(VALUES, dtype)
        np.testing.assert_array_equal(ours.support(host), plain.support(host))
        assert isinstance(ours.support(host), np.ndarray)


def _parameters(distribution):
    if isinstance(distribution, dist.Uniform):
        return distribution.low, distribution.high
    return (distribution.scale,)


@pytest.mark.parametrize("x64", [True, False])
def test_the_boxes_are_the_numpyro_priors_bounds(x64):
    """default_priors (NumPyro distributions, one per kind) is built from the boxes: the
    same bounds, bit for bit, for every kind of parameter and the noise."""
    model = peak_model(
        ("gaussian", "voigt_area", "pseudo_voigt", "skewed_gaussian", "pearson7",
         "doniach_sunjic"), 3,
    )  # fmt: skip
    with jax.enable_x64(x64):
        boxes = default_prior_boxes(model, (-2.0, 8.0), (-0.3, 2.7))
        priors = default_priors(model, (-2.0, 8.0), (-0.3, 2.7))
    assert list(boxes) == list(priors) == [*model.free_names, "sigma"]
    for name, box in boxes.items():
        prior = priors[name]
        assert type(prior) is type(box.distribution())
        for ours, theirs in zip(box, _parameters(prior), strict=True):
            assert jnp.asarray(ours).dtype == jnp.asarray(theirs).dtype
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    # one box (and one distribution) per kind: the two heights share theirs
    assert priors["peak0_height"] is priors["peak2_height"]
    assert boxes["peak0_height"] is boxes["peak2_height"]

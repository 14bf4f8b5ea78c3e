"""mclust's ten constrained models in the NumPyro program, against independent references.

The program's log density is recomputed here with SciPy, the covariance built from
volume, shape and orientation by NumPy's QR (not the program's Gram-Schmidt); the
constraints are checked on the implied covariances only (common determinant, common
eigenvalues, commuting matrices, diagonal matrices), never on the parameterization.
"""

import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import Predictive
from numpyro.infer.util import log_density, log_likelihood
from scipy import stats
from scipy.special import gammaln, logsumexp

from gaussmix.models.eigen_covariance import (
    EIGEN_MODELS,
    LOG_SHAPE_SCALE,
    ORIENTATION_SHELL,
    OrientationBasis,
    covariance_from_parts,
    eigen_sites,
    latent_values,
)
from gaussmix.models.mixture import check_priors, gaussian_mixture, prior_site_names
from gaussmix.models.priors import COVARIANCE_LAYOUTS, COVARIANCE_SITES, default_prior_parameters

K = 3


def random_latent(covariance_type, D, seed=0):
    """Latent values of a model, drawn here (not by the program)."""
    rng = np.random.default_rng(seed)
    sites = eigen_sites(covariance_type, D)
    values = {"weights": rng.dirichlet(np.ones(K)), "means": rng.normal(size=(K, D))}
    values[sites.volume] = rng.uniform(0.5, 2.0, size=() if sites.volume == "volume" else K)
    if sites.log_shape:
        values[sites.log_shape] = rng.normal(
            size=(D,) if sites.log_shape == "log_shape" else (K, D)
        )
    if sites.orientation:
        shape = (D - 1, D) if sites.orientation == "orientation_basis" else (K, D - 1, D)
        values[sites.orientation] = rng.normal(size=shape)
    return values


def reference_covariances(values, covariance_type, D):
    """(K, D, D) from the latent values: Sigma_k = lambda_k Q_k diag(a_k) Q_k^T with Q_k
    completed by NumPy's QR of the basis (a different algorithm from the program's)."""
    sites = eigen_sites(covariance_type, D)
    volumes = np.broadcast_to(values[sites.volume], (K,))
    if sites.log_shape:
        z = np.broadcast_to(values[sites.log_shape], (K, D))
        shapes = np.exp(z - z.mean(axis=-1, keepdims=True))
    else:
        shapes = np.ones((K, D))
    covariances = []
    for k in range(K):
        if sites.orientation:
            basis = np.broadcast_to(values[sites.orientation], (K, D - 1, D))[k]
            q, _ = np.linalg.qr(basis.T, mode="complete")  # (D, D): first D-1 span the rows
        else:
            q = np.eye(D)
        covariances.append(volumes[k] * q @ np.diag(shapes[k]) @ q.T)
    return np.stack(covariances)


def orientation_log_prior(basis, shell=ORIENTATION_SHELL):
    """SciPy's value of :class:`OrientationBasis` at one (D-1, D) matrix."""
    D = basis.shape[-1]
    lengths = np.abs(np.diag(np.linalg.qr(basis.T)[1]))  # |R_jj| of QR = Gram-Schmidt lengths
    degrees = D - np.arange(D - 1)
    normalizer = np.sum(
        0.5 * shell * np.log(2.0) + gammaln((degrees + shell) / 2) - gammaln(degrees / 2)
    )
    return stats.norm.logpdf(basis).sum() + shell * np.log(lengths).sum() - normalizer


def scipy_log_joint(x, values, covariance_type, D):
    hyper = default_prior_parameters(x, covariance_type)
    sites = eigen_sites(covariance_type, D)
    covariances = reference_covariances(values, covariance_type, D)
    nu = float(hyper.degrees_of_freedom)
    psi = np.asarray(hyper.covariance_prior)
    mean_variance = np.trace(psi) / D if psi.ndim == 2 else float(np.mean(psi))
    total = stats.dirichlet(np.ones(K)).logpdf(values["weights"])
    total += stats.invgamma(nu / 2, scale=mean_variance / 2).logpdf(values[sites.volume]).sum()
    if sites.log_shape:
        total += stats.norm(0.0, LOG_SHAPE_SCALE).logpdf(values[sites.log_shape]).sum()
    if sites.orientation:
        bases = np.reshape(values[sites.orientation], (-1, D - 1, D))
        total += sum(orientation_log_prior(basis) for basis in bases)
    m0, kappa = np.asarray(hyper.mean_prior), float(hyper.mean_precision)
    for k in range(K):
        total += stats.multivariate_normal(m0, covariances[k] / kappa).logpdf(values["means"][k])
    joint = np.stack(
        [
            np.log(values["weights"][k])
            + stats.multivariate_normal(values["means"][k], covariances[k]).logpdf(x)
            for k in range(K)
        ],
        axis=-1,
    ).reshape(len(x), K)
    pointwise = logsumexp(joint, axis=-1)
    return total + pointwise.sum(), pointwise, covariances


def dense(covariance, covariance_type, D):
    layout = COVARIANCE_LAYOUTS[covariance_type]
    covariance = np.asarray(covariance)
    if layout == "spherical":
        return covariance[..., None, None] * np.eye(D)
    if layout == "diag":
        return covariance[..., None] * np.eye(D)
    return covariance


@pytest.mark.parametrize("covariance_type", EIGEN_MODELS)
@pytest.mark.parametrize("D", [1, 3])
def test_log_density_matches_scipy(covariance_type, D):
    x = np.random.default_rng(1).normal(size=(40, D)) * 2.0
    values = random_latent(covariance_type, D)
    kwargs = {"n_components": K, "covariance_type": covariance_type}

    @jax.jit
    def evaluate(values):
        value, trace = log_density(gaussian_mixture, (x,), kwargs, values)
        pointwise = log_likelihood(gaussian_mixture, values, x, batch_ndims=0, **kwargs)["x"]
        return value, pointwise, trace[COVARIANCE_SITES[covariance_type]]["value"]

    value, pointwise, covariance = evaluate(values)
    expected, expected_pointwise, covariances = scipy_log_joint(x, values, covariance_type, D)
    np.testing.assert_allclose(float(value), expected, rtol=1e-10)
    np.testing.assert_allclose(pointwise, expected_pointwise, rtol=1e-10)
    np.testing.assert_allclose(dense(covariance, covariance_type, D), covariances, atol=1e-12)


def test_orientation_prior_is_normalized_and_its_lengths_are_chi():
    """The density integrates to one (D = 2: on a 2-D grid), matches SciPy at random
    points (D = 4), and its draws have Gram-Schmidt lengths chi(D - j + 1 + c)."""
    grid = np.linspace(-12.0, 12.0, 961)  # the trapezoid rule: spectral for this density
    a, b = np.meshgrid(grid, grid, indexing="ij")
    density = np.exp(np.asarray(OrientationBasis(2).log_prob(np.stack([a, b], -1)[..., None, :])))
    mass = np.trapezoid(np.trapezoid(density, grid, axis=1), grid)
    assert mass == pytest.approx(1.0, abs=1e-9)
    prior4 = OrientationBasis(4)
    points = np.random.default_rng(0).normal(size=(5, 3, 4)) * 1.7
    np.testing.assert_allclose(
        prior4.log_prob(points), [orientation_log_prior(p) for p in points], rtol=1e-12
    )
    draws = np.asarray(prior4.sample(jax.random.key(1), (4000,)))
    lengths = np.abs(np.diagonal(np.linalg.qr(np.swapaxes(draws, -1, -2))[1], axis1=-2, axis2=-1))
    for j in range(3):
        degrees = 4 - j + ORIENTATION_SHELL
        assert stats.kstest(lengths[:, j], stats.chi(degrees).cdf).pvalue > 1e-4, j
    # Haar: the first orthonormal row is uniform on the sphere, E[q q^T] = I / D
    q = draws[:, 0] / np.linalg.norm(draws[:, 0], axis=-1, keepdims=True)
    second_moment = np.einsum("na,nb->ab", q, q) / len(q)
    np.testing.assert_allclose(second_moment, np.eye(4) / 4, atol=5 * 0.25 / math.sqrt(len(q)))


def eigenvalues_by_volume(covariances):
    values = np.linalg.eigvalsh(covariances)
    return values / np.exp(np.mean(np.log(values), axis=-1, keepdims=True))


def assert_constraints(covariances, covariance_type, atol=1e-9):
    """The model's constraints, read from the (K, D, D) covariances alone."""
    volume, shape, orientation = covariance_type
    np.testing.assert_allclose(covariances, np.swapaxes(covariances, -1, -2), atol=0)
    assert np.all(np.linalg.eigvalsh(covariances) > 0)
    log_volumes = np.linalg.slogdet(covariances)[1] / covariances.shape[-1]
    if volume == "E":
        np.testing.assert_allclose(log_volumes, log_volumes[0], atol=atol)
    if orientation == "I":
        off_diagonal = covariances - covariances * np.eye(covariances.shape[-1])
        np.testing.assert_allclose(off_diagonal, 0.0, atol=0)
    if orientation == "E":  # common eigenvectors: the matrices commute
        for i in range(len(covariances)):
            for j in range(i):
                a, b = covariances[i], covariances[j]
                np.testing.assert_allclose(a @ b, b @ a, atol=atol * np.abs(a @ b).max())
    scaled = covariances / np.exp(log_volumes)[:, None, None]  # lambda_k^-1 Sigma_k
    if shape == "I":
        np.testing.assert_allclose(eigenvalues_by_volume(covariances), 1.0, rtol=1e-8)
    elif shape == "E" and orientation == "V":  # the same eigenvalues, any axes
        shapes = eigenvalues_by_volume(covariances)
        np.testing.assert_allclose(shapes, np.broadcast_to(shapes[0], shapes.shape), rtol=1e-8)
    elif shape == "E":  # the same axes too: one matrix D A D^T
        np.testing.assert_allclose(scaled, np.broadcast_to(scaled[0], scaled.shape), rtol=1e-8)


@pytest.mark.parametrize("covariance_type", EIGEN_MODELS)
def test_prior_draws_have_the_models_constraints(covariance_type):
    D = 3
    predictive = Predictive(gaussian_mixture, num_samples=20)
    draws = jax.jit(  # one program, not one per operation
        lambda key: predictive(
            key, n_components=K, covariance_type=covariance_type, n_samples=5, n_features=D
        )
    )(jax.random.key(0))
    covariances = dense(draws[COVARIANCE_SITES[covariance_type]], covariance_type, D)
    assert covariances.shape == (20, K, D, D)
    for draw in covariances:
        assert_constraints(draw, covariance_type)
    sites = eigen_sites(covariance_type, D)
    if sites.shape:
        np.testing.assert_allclose(np.prod(draws[sites.shape], axis=-1), 1.0, rtol=1e-12)
    # the varying parts vary: the constraints are not stronger than the model's
    volume, shape, orientation = covariance_type
    if volume == "V":
        assert np.all(np.ptp(np.linalg.slogdet(covariances)[1], axis=1) > 1e-6)
    if shape == "V":
        assert np.all(np.ptp(eigenvalues_by_volume(covariances), axis=1).max(-1) > 1e-6)
    if orientation == "V":
        a, b = covariances[:, 0], covariances[:, 1]
        assert np.all(np.abs(a @ b - b @ a).max(axis=(-2, -1)) > 1e-6)


@pytest.mark.parametrize("covariance_type", EIGEN_MODELS)
@pytest.mark.parametrize("D", [1, 2, 4])
def test_latent_values_give_back_the_covariance(covariance_type, D):
    """A covariance with the model's constraints -> volume, shape, orientation -> the
    same covariance (the starting point NUTS gets from an EM fit)."""
    values = random_latent(covariance_type, D, seed=D)
    covariances = reference_covariances(values, covariance_type, D)
    layout = COVARIANCE_LAYOUTS[covariance_type]
    site = {
        "spherical": covariances[:, 0, 0],
        "diag": np.diagonal(covariances, axis1=-2, axis2=-1),
        "full": covariances,
    }[layout]
    latent = latent_values(site, covariance_type)
    sites = eigen_sites(covariance_type, D)
    assert set(latent) == {name for name in sites[:3] if name}
    shape = None
    if sites.log_shape:
        z = latent[sites.log_shape]
        shape = np.exp(z - z.mean(-1, keepdims=True))
    rebuilt = covariance_from_parts(
        latent[sites.volume], shape, latent.get(sites.orientation), covariance_type, K, D
    )
    np.testing.assert_allclose(dense(rebuilt, covariance_type, D), covariances, rtol=1e-10)


def test_an_alias_is_the_classic_program():
    x = np.random.default_rng(0).normal(size=(30, 2))
    values = {"weights": np.full(2, 0.5), "means": np.zeros((2, 2)), "variances": np.ones((2, 2))}
    a, _ = log_density(
        gaussian_mixture, (x,), {"n_components": 2, "covariance_type": "VVI"}, values
    )
    b, _ = log_density(
        gaussian_mixture, (x,), {"n_components": 2, "covariance_type": "diag"}, values
    )
    assert float(a) == float(b)
    assert prior_site_names("VVI") == prior_site_names("diag")


@pytest.mark.parametrize(
    ("covariance_type", "priors", "message"),
    [
        (
            "VEV",
            {"covariances": dist.InverseWishart(3.0, np.eye(2))},
            r"Unknown prior site.*'volumes'",
        ),
        ("EII", {"log_shape": dist.Normal(0.0, 1.0)}, r"Unknown prior site.*\['log_shape'\]"),
        ("VEV", {"orientation_basis": dist.Normal(0.0, 1.0)}, "orientation_bases"),
        ("EVE", {"volume": dist.Normal(0.0, 1.0)}, "volume lives on the positive reals"),
        ("VVE", {"volumes": dist.HalfNormal(np.ones(4))}, r"priors\['volumes'\] has event shape"),
        ("EEV", {"log_shape": dist.Normal(np.zeros(3), 1.0)}, r"priors\['log_shape'\] has event"),
        ("EEV", "nan", "non-finite scale"),
        (
            "VEE",
            {"orientation_basis": dist.Normal(np.zeros((2, 2)), 1.0).to_event(2)},
            "event shape",
        ),
    ],
)
def test_bad_priors_are_refused_naming_the_site(covariance_type, priors, message):
    x = np.random.default_rng(0).normal(size=(20, 2))
    if priors == "nan":
        with numpyro.validation_enabled(False):
            priors = {"log_shape": dist.Normal(0.0, np.nan)}
    with pytest.raises(ValueError, match=message):
        gaussian_mixture(x, n_components=3, covariance_type=covariance_type, priors=priors)


def test_one_dimension_has_volumes_only():
    x = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match="in one dimension a constrained model has its volumes"):
        check_priors({"log_shapes": dist.Normal(0.0, 1.0)}, "EVV", n_components=2, n_features=1)
    draws = Predictive(gaussian_mixture, num_samples=2)(
        jax.random.key(0), x, n_components=2, covariance_type="EVV"
    )
    assert set(draws) == {"weights", "volume", "covariances", "means", "x"}


def test_user_priors_on_the_new_sites_are_used():
    """A user's prior replaces the default: the log density moves by exactly the
    difference of the two priors' log densities."""
    x = np.random.default_rng(0).normal(size=(20, 2))
    values = random_latent("VEV", 2)
    kwargs = {"n_components": K, "covariance_type": "VEV"}
    base, _ = log_density(gaussian_mixture, (x,), kwargs, values)
    priors = {"volumes": dist.LogNormal(0.0, 1.0), "log_shape": dist.Normal(0.0, 0.5)}
    changed, _ = log_density(gaussian_mixture, (x,), {**kwargs, "priors": priors}, values)
    hyper = default_prior_parameters(x, "VEV")
    default_volume = stats.invgamma(1.0, scale=np.trace(hyper.covariance_prior) / 4)
    expected = (
        stats.lognorm(1.0).logpdf(values["volumes"]).sum()
        - default_volume.logpdf(values["volumes"]).sum()
        + stats.norm(0, 0.5).logpdf(values["log_shape"]).sum()
        - stats.norm(0, LOG_SHAPE_SCALE).logpdf(values["log_shape"]).sum()
    )
    np.testing.assert_allclose(float(changed) - float(base), expected, rtol=1e-10)


def test_float32_log_density_and_gradient_are_finite():
    """Without x64 (float32 throughout) every model's log density and gradient are finite
    at a prior draw and at the values read off an EM-like covariance."""
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from numpyro.infer.util import log_density
        from gaussmix.models.eigen_covariance import (
            EIGEN_MODELS, covariance_from_parts, eigen_sites, latent_values)
        from gaussmix.models.mixture import gaussian_mixture
        assert not jax.config.jax_enable_x64
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(-2, 1, (50, 3)), rng.normal(2, 0.5, (50, 3))])
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        K, D = 2, 3
        for model in EIGEN_MODELS:
            kwargs = {"n_components": K, "covariance_type": model}
            sites = eigen_sites(model, D)
            drawn = {"weights": np.full(K, 0.5), "means": rng.normal(size=(K, D)),
                     sites.volume: rng.uniform(0.5, 2.0, K if sites.volume == "volumes" else ())}
            if sites.log_shape:
                drawn[sites.log_shape] = rng.normal(size=(K, D) if sites.shape == "shapes" else D)
            if sites.orientation:
                many = sites.orientation == "orientation_bases"
                drawn[sites.orientation] = rng.normal(size=(K, D - 1, D) if many else (D - 1, D))
            drawn = {name: np.asarray(value, np.float32) for name, value in drawn.items()}
            shape = None
            if sites.log_shape:
                z = drawn[sites.log_shape]
                shape = np.exp(z - z.mean(-1, keepdims=True))
            covariance = covariance_from_parts(
                drawn[sites.volume], shape, drawn.get(sites.orientation), model, K, D)
            start = {"weights": drawn["weights"], "means": drawn["means"]}
            start.update(latent_values(np.asarray(covariance), model))
            evaluate = jax.jit(jax.value_and_grad(
                lambda v: log_density(gaussian_mixture, (x,), kwargs, v)[0]))
            for values in (drawn, start):
                value, grad = evaluate(values)
                assert value.dtype == np.float32, value.dtype
                assert np.isfinite(value), (model, value)
                assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad)), model
        print("ok")
        """
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


@pytest.mark.parametrize(
    ("covariance", "message"),
    [
        (np.eye(2), r"shape \(K, D, D\)"),
        (np.ones((2, 2, 3)), r"shape \(K, D, D\)"),
        (np.stack([np.eye(2), -np.eye(2)]), "positive definite"),
        (np.stack([np.eye(2), np.full((2, 2), np.nan)]), "positive definite"),
        (np.array([[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
    ],
)
def test_latent_values_refuse_what_is_no_covariance(covariance, message):
    with pytest.raises(ValueError, match=message):
        latent_values(covariance, "VEV")
    with pytest.raises(ValueError, match="finite and positive"):
        latent_values(np.array([[1.0, -2.0]]), "VEI")

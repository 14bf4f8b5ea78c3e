"""mclust's constrained covariance models in the NumPyro program.

Celeux & Govaert (1995) write each component's covariance as volume, shape and
orientation,

.. math::

    \\Sigma_k = \\lambda_k\\, D_k A_k D_k^\\top, \\qquad \\lambda_k > 0,\\quad
    A_k = \\mathrm{diag}(a_{k1}, \\dots, a_{kD}),\\ \\prod_d a_{kd} = 1,\\quad
    D_k^\\top D_k = I,

each part Equal across components (one site), Variable (a site with a component axis)
or the Identity (no site). The four classic types keep their own sites (VVV = full,
EEE = tied, VVI = diag, VII = spherical); this module holds the ten others:

=====  ===========  ==============  =====================  =========================
model  volume       shape           orientation            covariance site
=====  ===========  ==============  =====================  =========================
EII    ``volume``   (I)             (I)                    ``variances`` (K,)
EEI    ``volume``   ``log_shape``   (I)                    ``variances`` (K, D)
VEI    ``volumes``  ``log_shape``   (I)                    ``variances`` (K, D)
EVI    ``volume``   ``log_shapes``  (I)                    ``variances`` (K, D)
VEE    ``volumes``  ``log_shape``   ``orientation_basis``  ``covariances`` (K, D, D)
EVE    ``volume``   ``log_shapes``  ``orientation_basis``  ``covariances`` (K, D, D)
VVE    ``volumes``  ``log_shapes``  ``orientation_basis``  ``covariances`` (K, D, D)
EEV    ``volume``   ``log_shape``   ``orientation_bases``  ``covariances`` (K, D, D)
VEV    ``volumes``  ``log_shape``   ``orientation_bases``  ``covariances`` (K, D, D)
EVV    ``volume``   ``log_shapes``  ``orientation_bases``  ``covariances`` (K, D, D)
=====  ===========  ==============  =====================  =========================

A plural name carries the component axis first (``volumes`` (K,), ``log_shapes``
(K, D), ``orientation_bases`` (K, D-1, D)); a singular one is shared (``volume`` (),
``log_shape`` (D,), ``orientation_basis`` (D-1, D)). The covariance each draw implies is
the deterministic site of the model's storage layout
(:data:`gaussmix.models.priors.COVARIANCE_LAYOUTS`), so relabeling, summaries, LOO and
the predictive read it as they read the classic types; ``shape`` / ``shapes`` (the
diagonal of :math:`A`) are deterministic too. In one dimension a model has its volumes
only (:math:`A = D = 1`).

Parameterizations (what NUTS samples) and their default priors:

* **volume** :math:`\\lambda \\sim \\mathrm{InvGamma}(\\nu_0/2, \\bar\\psi_0/2)` with
  :math:`\\bar\\psi_0 = \\operatorname{tr}\\Psi_0 / D` (the mean sample variance of the
  data): the default prior of a spherical variance (VII), so EII with K = 1 is VII.
* **shape** through unconstrained log-shapes :math:`z \\in \\mathbb{R}^D`,
  :math:`z_d \\sim \\mathcal{N}(0, 2^2)` iid, and

  .. math::

      a_d = \\exp\\Big(z_d - \\frac1D \\sum_{e} z_e\\Big),

  so :math:`\\prod_d a_d = 1` by construction and :math:`\\log a` is Normal on the
  sum-zero plane, :math:`\\mathcal{N}(0, 4 (I - \\mathbf{1}\\mathbf{1}^\\top / D))`: each
  ratio of two axes' variances has a log-normal prior of standard deviation
  :math:`2\\sqrt2` (a ratio of 270 is two standard deviations out). The mean of
  :math:`z` does not enter the likelihood; it keeps its Normal prior, an independent
  Gaussian direction NUTS adapts to at no cost.
* **orientation** through a (D-1, D) matrix :math:`M` whose rows are orthonormalized
  by Gram-Schmidt, :math:`q_1, \\dots, q_{D-1}`; the last axis is the orthogonal
  complement, entering only as the projector :math:`q_D q_D^\\top = I - \\sum_{j<D} q_j
  q_j^\\top`:

  .. math::

      \\Sigma = \\lambda \\Big[a_D I + \\sum_{j<D} (a_j - a_D)\\, q_j q_j^\\top\\Big].

  The default prior of :math:`M` (:class:`OrientationBasis`) is iid
  :math:`\\mathcal{N}(0, 1)` entries tilted by :math:`\\prod_j \\rho_j^6`, with
  :math:`\\rho_j` the Gram-Schmidt lengths. Its law is invariant under any rotation
  :math:`U` and Gram-Schmidt is equivariant (:math:`\\mathrm{GS}(M U^\\top) =
  \\mathrm{GS}(M) U^\\top`), so the implied :math:`D = [q_1 \\dots q_D]` is
  Haar-distributed on the orthogonal group (up to the sign of each axis, which does not
  change :math:`\\Sigma`): every orientation is equally likely a priori. The map is
  smooth away from :math:`\\rho_j = 0`, where the orientation's curvature grows as
  :math:`1 / \\rho_j^2`; the tilt keeps the lengths near :math:`\\sqrt{D - j + 7}`
  (with plain iid Normal entries NUTS diverged in 51 of 400 transitions on a 2-D VEV
  fit, none with the tilt). The lengths, and each row's components along earlier rows,
  do not enter the likelihood. Each axis can point either way (:math:`q_j` and
  :math:`-q_j` give the same :math:`\\Sigma`), so the orientation sites are not
  identified and have no meaningful R-hat: summarize the covariance site (and
  ``volume(s)``, ``shape(s)``) instead.

The means keep the classic conditional prior,
:math:`\\mu_k \\mid \\Sigma_k \\sim \\mathcal{N}(m_0, \\Sigma_k / \\kappa_0)`.
"""

import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    MixturePriorParameters,
    per_component_prior,
    shared_prior,
)

__all__ = [
    "EIGEN_MODELS",
    "LOG_SHAPE_SCALE",
    "ORIENTATION_SHELL",
    "PER_COMPONENT_SITES",
    "EigenSites",
    "OrientationBasis",
    "covariance_from_parts",
    "eigen_sites",
    "gram_schmidt",
    "latent_values",
    "orthonormal_rows",
    "sample_eigen_covariance",
    "volume_prior_scale",
]

#: The ten models of mclust that are none of the four classic types.
EIGEN_MODELS = ("EII", "EEI", "VEI", "EVI", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV")

#: The sites of the constrained models with a leading component axis (the others are
#: shared: ``volume``, ``log_shape``, ``shape``, ``orientation_basis``).
PER_COMPONENT_SITES = ("volumes", "log_shapes", "shapes", "orientation_bases")

#: Standard deviation of the default Normal prior of each log-shape entry.
LOG_SHAPE_SCALE = 2.0

#: The exponent c of :class:`OrientationBasis` (Gram-Schmidt lengths
#: :math:`\chi_{D-j+1+c}`).
ORIENTATION_SHELL = 6.0


class EigenSites(NamedTuple):
    """The latent sites of one model (``None`` where the part is the identity).

    Attributes:
        volume: ``"volume"`` (shared) or ``"volumes"`` (one per component).
        log_shape: ``"log_shape"``, ``"log_shapes"`` or ``None`` (EII, or D = 1).
        orientation: ``"orientation_basis"``, ``"orientation_bases"`` or ``None``.
        shape: the deterministic diagonal of :math:`A`: ``"shape"``, ``"shapes"`` or None.
    """

    volume: str
    log_shape: str | None
    orientation: str | None
    shape: str | None


def eigen_sites(covariance_type: str, n_features: int | None = None) -> EigenSites:
    """Site names of one of :data:`EIGEN_MODELS`; with ``n_features=1`` the volume only.

    Example:
        >>> eigen_sites("VEV")
        EigenSites(volume='volumes', log_shape='log_shape', orientation='orientation_bases', shape='shape')
        >>> eigen_sites("EVI", n_features=1).log_shape is None
        True
    """
    if covariance_type not in EIGEN_MODELS:
        raise ValueError(
            f"{covariance_type!r} is not one of mclust's constrained models {list(EIGEN_MODELS)}."
        )
    volume, shape, orientation = covariance_type
    one_dimensional = n_features is not None and int(n_features) == 1
    log_shape = (
        None if shape == "I" or one_dimensional else {"E": "log_shape", "V": "log_shapes"}[shape]
    )
    orientation_site = (
        None
        if orientation == "I" or one_dimensional
        else {"E": "orientation_basis", "V": "orientation_bases"}[orientation]
    )
    return EigenSites(
        volume={"E": "volume", "V": "volumes"}[volume],
        log_shape=log_shape,
        orientation=orientation_site,
        shape=None if log_shape is None else log_shape.removeprefix("log_"),
    )


def volume_prior_scale(covariance_prior: jax.Array) -> jax.Array:
    """:math:`\\bar\\psi_0`, the mean of the diagonal of the layout's :math:`\\Psi_0`
    ((D, D), (D,) or a scalar)."""
    covariance_prior = jnp.asarray(covariance_prior)
    if covariance_prior.ndim == 2:
        return jnp.trace(covariance_prior) / covariance_prior.shape[0]
    return jnp.mean(covariance_prior)


def gram_schmidt(basis: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gram-Schmidt (modified) on the rows of (..., J, D) matrices, J <= D.

    Returns:
        ``(rows, lengths)``: (..., J, D) orthonormal rows :math:`q_j` and (..., J) the
        lengths :math:`\\rho_j` of each row's part orthogonal to the rows before it (the
        diagonal of the triangular factor, :math:`m_j = \\rho_j q_j + \\sum_{i<j}
        (q_i \\cdot m_j)\\, q_i`).
    """
    rows, lengths = [], []
    for j in range(basis.shape[-2]):
        vector = basis[..., j, :]
        for previous in rows:
            vector = vector - jnp.sum(previous * vector, axis=-1, keepdims=True) * previous
        length = jnp.linalg.norm(vector, axis=-1)
        rows.append(vector / length[..., None])
        lengths.append(length)
    return jnp.stack(rows, axis=-2), jnp.stack(lengths, axis=-1)


def orthonormal_rows(basis: jax.Array) -> jax.Array:
    """The orthonormal rows of (..., J, D) matrices by Gram-Schmidt (:func:`gram_schmidt`).

    Example:
        >>> q = orthonormal_rows(jnp.array([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> bool(jnp.allclose(q @ q.T, jnp.eye(2), atol=1e-6))
        True
    """
    return gram_schmidt(basis)[0]


class OrientationBasis(dist.Distribution):
    """The default prior of an orientation basis: a (D-1, D) matrix :math:`M` whose
    orthonormalized rows are uniform (Haar) and whose Gram-Schmidt lengths keep away
    from zero.

    .. math::

        p(M) = \\prod_{j,d} \\mathcal{N}(M_{jd} \\mid 0, 1)\\;
            \\prod_{j=1}^{D-1} \\frac{\\rho_j^{c}}{\\mathbb{E}[\\rho_j^{c}]},
        \\qquad \\mathbb{E}[\\rho_j^{c}] = 2^{c/2}\\,
            \\frac{\\Gamma((D - j + 1 + c)/2)}{\\Gamma((D - j + 1)/2)},

    with :math:`\\rho_j` the lengths of :func:`gram_schmidt`. Under iid Normal entries
    (c = 0) the orthonormal rows are Haar-distributed and independent of the
    triangular factor, whose diagonal has :math:`\\rho_j \\sim \\chi_{D-j+1}`
    (Bartlett's decomposition); the factor :math:`\\rho_j^c` turns that law into
    :math:`\\chi_{D-j+1+c}` and leaves the rows Haar. The orientation depends on
    :math:`q_j = (\\ldots)/\\rho_j` only, whose curvature grows as :math:`1/\\rho_j^2`
    near zero: with ``shell`` c = 6 the lengths stay near
    :math:`\\sqrt{D-j+7}`, where NUTS's step size fits (iid Normal entries diverged
    there).

    Args:
        n_features: D >= 2.
        shell: c >= 0.
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.independent(constraints.real, 2)
    pytree_aux_fields = ("n_features", "shell")

    def __init__(self, n_features: int, shell: float = ORIENTATION_SHELL, *, validate_args=None):
        self.n_features, self.shell = int(n_features), float(shell)
        super().__init__(
            batch_shape=(),
            event_shape=(self.n_features - 1, self.n_features),
            validate_args=validate_args,
        )

    def _log_normalizer(self) -> float:
        c = self.shell
        return sum(  # degrees of freedom D - j + 1, j = 1 .. D-1
            0.5 * c * math.log(2.0) + math.lgamma((k + c) / 2) - math.lgamma(k / 2)
            for k in range(self.n_features, 1, -1)
        )

    def log_prob(self, value):
        _, lengths = gram_schmidt(value)
        normal = -0.5 * jnp.sum(value**2, axis=(-2, -1)) - 0.5 * value.shape[-1] * (
            value.shape[-2]
        ) * math.log(2.0 * math.pi)
        return normal + self.shell * jnp.sum(jnp.log(lengths), axis=-1) - self._log_normalizer()

    def sample(self, key, sample_shape=()):
        """Normal rows whose Gram-Schmidt lengths are redrawn from
        :math:`\\chi_{D-j+1+c}`: :math:`m_j \\leftarrow m_j + (\\rho'_j - \\rho_j) q_j`."""
        normal_key, length_key = jax.random.split(key)
        shape = (*sample_shape, *self.batch_shape, *self.event_shape)
        value = jax.random.normal(normal_key, shape)
        rows, lengths = gram_schmidt(value)
        degrees = jnp.asarray(self.n_features - np.arange(self.n_features - 1), value.dtype)
        new_lengths = jnp.sqrt(
            2.0 * jax.random.gamma(length_key, (degrees + self.shell) / 2, lengths.shape)
        )
        return value + (new_lengths - lengths)[..., None] * rows


def covariance_from_parts(
    volume: jax.Array,
    shape: jax.Array | None,
    basis: jax.Array | None,
    covariance_type: str,
    n_components: int,
    n_features: int,
) -> jax.Array:
    """The covariance site of a model from its parts.

    .. math::

        \\Sigma_k = \\lambda_k \\Big[a_{kD} I + \\sum_{j<D} (a_{kj} - a_{kD})\\,
            q_{kj} q_{kj}^\\top\\Big]

    Args:
        volume: () or (K,).
        shape: the diagonal of :math:`A`, (D,) or (K, D), product 1; ``None`` for the
            identity.
        basis: (D-1, D) or (K, D-1, D), rows to orthonormalize (:func:`orthonormal_rows`);
            ``None`` for axis-aligned models.
        covariance_type: one of :data:`EIGEN_MODELS`.
        n_components, n_features: K, D.

    Returns:
        The layout's covariance: (K,) for EII, (K, D) for the diagonal models,
        (K, D, D) for the others.
    """
    K, D = n_components, n_features
    layout = COVARIANCE_LAYOUTS[covariance_type]
    volume = jnp.asarray(volume)
    if layout == "spherical":
        return jnp.broadcast_to(volume, (K,))
    if shape is None:
        shape = jnp.ones((D,), volume.dtype)
    if layout == "diag" or basis is None:
        variances = jnp.broadcast_to(volume[..., None] * shape, (K, D))
        if layout == "diag":
            return variances
        return variances[..., None] * jnp.eye(D, dtype=variances.dtype)
    frame = orthonormal_rows(basis)  # (..., D-1, D)
    difference = shape[..., :-1] - shape[..., -1:]
    identity = jnp.eye(D, dtype=frame.dtype)
    matrix = shape[..., -1, None, None] * identity + jnp.einsum(
        "...j,...ja,...jb->...ab", difference, frame, frame
    )
    return jnp.broadcast_to(volume[..., None, None] * matrix, (K, D, D))


def _volume_distribution(p: MixturePriorParameters) -> dist.Distribution:
    return dist.InverseGamma(
        jnp.asarray(p.degrees_of_freedom) / 2, volume_prior_scale(p.covariance_prior) / 2
    )


def sample_eigen_covariance(
    covariance_type: str,
    n_components: int,
    n_features: int,
    prior_parameters: MixturePriorParameters,
    user_priors: Mapping[str, dist.Distribution],
) -> jax.Array:
    """Sample the parts of a constrained model and record its covariance site.

    Shared parts are sampled outside the ``components`` plate, varying ones inside it;
    the implied covariance is the deterministic site of the layout (``variances`` or
    ``covariances``), the diagonal of :math:`A` the deterministic ``shape(s)``.

    Args:
        covariance_type: one of :data:`EIGEN_MODELS`.
        n_components, n_features: K, D.
        prior_parameters: the layout's hyperparameters (:math:`\\nu_0`, :math:`\\Psi_0`).
        user_priors: checked user priors (:func:`gaussmix.models.mixture.check_priors`).

    Returns:
        The covariance site's value.
    """
    K, D = n_components, n_features
    sites = eigen_sites(covariance_type, D)
    dtype = jnp.result_type(float)
    defaults = {
        sites.volume: (_volume_distribution(prior_parameters), ()),
        sites.log_shape: (dist.Normal(jnp.zeros((), dtype), LOG_SHAPE_SCALE), (D,)),
        sites.orientation: (OrientationBasis(D), (D - 1, D)),
    }
    values = {}
    for name, (default, event_shape) in defaults.items():  # shared parts
        if name is None or name in PER_COMPONENT_SITES:
            continue
        prior = user_priors.get(name, default)
        values[name] = numpyro.sample(name, shared_prior(prior, event_shape, name))
    with numpyro.plate("components", K):  # one part per component
        for name, (default, event_shape) in defaults.items():
            if name not in PER_COMPONENT_SITES:
                continue
            prior = user_priors.get(name, default)
            values[name] = numpyro.sample(name, per_component_prior(prior, event_shape, name, K))
    shape = None
    if sites.log_shape is not None:
        log_shape = values[sites.log_shape]
        shape = numpyro.deterministic(
            sites.shape, jnp.exp(log_shape - jnp.mean(log_shape, axis=-1, keepdims=True))
        )
    covariance = covariance_from_parts(
        values[sites.volume],
        shape,
        values.get(sites.orientation),
        covariance_type,
        K,
        D,
    )
    site = {"spherical": "variances", "diag": "variances", "full": "covariances"}[
        COVARIANCE_LAYOUTS[covariance_type]
    ]
    return numpyro.deterministic(site, covariance)


def latent_values(covariance: np.ndarray, covariance_type: str) -> dict[str, np.ndarray]:
    """The latent sites of a model that give ``covariance`` (NumPy, nothing compiled).

    Decomposes each component's covariance into volume, shape and orientation (the
    eigendecomposition; for a common orientation that of :math:`\\sum_k \\Sigma_k /
    \\lambda_k`); parts the model shares are averaged (geometric means of volumes and
    shapes), which is exact for a covariance that has the model's constraints (an EM
    fit of the same model) and a projection onto them otherwise. The orientation
    basis is the first D-1 axes (its rows orthonormal already).

    Args:
        covariance: the layout's covariance site, (K,), (K, D) or (K, D, D).
        covariance_type: one of :data:`EIGEN_MODELS`.

    Returns:
        ``{site: value}`` of the model's latent sites (:func:`eigen_sites`).

    Example:
        >>> values = latent_values(np.array([[2.0, 0.5], [4.0, 1.0]]), "VEI")
        >>> values["volumes"].round(6).tolist(), values["log_shape"].round(6).tolist()
        ([1.0, 2.0], [0.693147, -0.693147])
    """
    covariance = np.asarray(covariance)
    dtype = covariance.dtype if np.issubdtype(covariance.dtype, np.floating) else np.float64
    covariance = covariance.astype(dtype)
    layout = COVARIANCE_LAYOUTS[covariance_type]
    ndim = {"spherical": 1, "diag": 2, "full": 3}[layout]
    square = layout != "full" or covariance.shape[-1:] == covariance.shape[-2:-1]
    if covariance.ndim != ndim or not square or covariance.size == 0:
        shapes = {"spherical": "(K,)", "diag": "(K, D)", "full": "(K, D, D)"}[layout]
        raise ValueError(
            f"The covariance of a {covariance_type} model must have shape {shapes} (its "
            f"layout {layout!r}), got {covariance.shape}."
        )
    valid = np.all(np.isfinite(covariance)) and (
        np.all(covariance > 0)
        if layout != "full"
        else np.all(np.linalg.eigvalsh(covariance) > 0)
        and np.allclose(covariance, np.swapaxes(covariance, -1, -2), rtol=1e-5, atol=0)
    )
    if not valid:
        raise ValueError(
            f"The covariance of a {covariance_type} model must be finite and positive "
            f"{'definite and symmetric' if layout == 'full' else ''}".rstrip()
            + "; give the covariances of a fit (e.g. GaussianMixture's params_)."
        )
    if layout == "spherical":
        log_volumes, log_shapes, basis = np.log(covariance), None, None
    elif layout == "diag":
        log_variances = np.log(covariance)
        log_volumes = log_variances.mean(axis=-1)
        log_shapes, basis = log_variances - log_volumes[:, None], None
    else:
        covariance = (covariance + np.swapaxes(covariance, -1, -2)) / 2
        log_volumes = np.linalg.slogdet(covariance)[1] / covariance.shape[-1]
        scaled = covariance / np.exp(log_volumes)[:, None, None]
        if covariance_type[2] == "E":  # one orientation: the eigenvectors of the sum
            _, vectors = np.linalg.eigh(scaled.sum(axis=0))
            vectors = np.broadcast_to(vectors[:, ::-1], scaled.shape)
            eigenvalues = np.einsum("kab,kac,kcb->kb", vectors, scaled, vectors)
        else:
            eigenvalues, vectors = np.linalg.eigh(scaled)
            eigenvalues, vectors = eigenvalues[:, ::-1], vectors[:, :, ::-1]  # descending
        log_shapes = np.log(eigenvalues)
        log_shapes -= log_shapes.mean(axis=-1, keepdims=True)
        basis = np.swapaxes(vectors, -1, -2)[:, :-1]  # (K, D-1, D): rows = first axes
    one_dimensional = layout != "spherical" and log_shapes.shape[-1] == 1
    sites = eigen_sites(covariance_type, 1 if one_dimensional else None)
    values = {
        sites.volume: np.exp(
            log_volumes.mean() if sites.volume == "volume" else log_volumes
        ).astype(dtype)
    }
    if sites.log_shape is not None:
        values[sites.log_shape] = (
            log_shapes.mean(axis=0) if sites.log_shape == "log_shape" else log_shapes
        ).astype(dtype)
    if sites.orientation is not None:
        values[sites.orientation] = np.ascontiguousarray(
            basis[0] if sites.orientation == "orientation_basis" else basis
        ).astype(dtype)
    return values

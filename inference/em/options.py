"""The options of an EM fit, validated once into one :class:`EMOptions`.

``fit_em``, ``fit_em_chunked``, ``fit_em_online`` and ``fit_em_sharded`` take the same
keywords; each builds an :class:`EMOptions` with :func:`check_options` (or takes a prebuilt
one, ``options=``, as the estimator passes it), and everything below reads that object.

Example:
    >>> options = check_options(n_components=2, covariance_type="diag", max_iter=50)
    >>> options.method, options.max_iter
    ('maximum_likelihood', 50)
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import numpyro.distributions as dist

from gaussmix.inference.em.maximization import base_distribution
from gaussmix.models.mixture import check_priors as check_program_priors
from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    COVARIANCE_SITES,
    COVARIANCE_TYPES,
    canonical_covariance_type,
    check_em_covariance_type,
)

__all__ = [
    "DEFAULT_INIT_ROWS",
    "HC_MODELS",
    "INIT_PARAMS",
    "METHODS",
    "EMOptions",
    "check_options",
    "check_priors",
    "hierarchical_model",
    "is_conjugate",
    "key_of",
]

#: The M-step that ran, as reported in :attr:`gaussmix.inference.em.EMResult.method`.
METHODS = ("maximum_likelihood", "conjugate_map", "generalized_em")
#: mclust's hierarchical clustering models (``hcModelName``) that ``init_params`` names
#: as ``"hc-<model>"``; ``"hc"`` is ``"hc-VVV"``, mclust's default.
HC_MODELS = ("EII", "VII", "EEE", "VVV")
#: Initialization methods: scikit-learn's ``init_params``, and ``"hc"``, mclust's start:
#: the K groups of the model-based hierarchical clustering
#: (:func:`gaussmix.inference.em.hierarchical.start_labels`: VVV criterion, or the
#: model of ``"hc-EII"``, ``"hc-VII"``, ``"hc-EEE"``, ``"hc-VVV"``; SVD transformation;
#: above 2000 rows a random subset of 2000 is clustered and the other rows classified),
#: computed on the host, then the model's own M-step. With ``n_init`` > 1, restart 0
#: starts from hc and the others from k-means. In-memory fits only.
INIT_PARAMS = (
    "kmeans",
    "k-means++",
    "random",
    "random_from_data",
    "hc",
    *(f"hc-{model}" for model in HC_MODELS),
)
#: Rows of the uniform sample the initialization (k-means, ...) of out-of-core and
#: sharded EM runs on.
DEFAULT_INIT_ROWS = 100_000


def hierarchical_model(init_params: str) -> str | None:
    """mclust's hc model that ``init_params`` starts from, or None for the other starts.

    Example:
        >>> hierarchical_model("hc"), hierarchical_model("hc-EEE"), hierarchical_model("kmeans")
        ('VVV', 'EEE', None)
    """
    if init_params == "hc":
        return "VVV"
    if isinstance(init_params, str) and init_params.startswith("hc-"):
        return init_params[3:]
    return None


class EMOptions(NamedTuple):
    """The validated options of an EM fit (build it with :func:`check_options`).

    Attributes:
        n_components: K >= 1.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's models
            (:data:`gaussmix.models.priors.EM_COVARIANCE_TYPES`); an alias (VVV, EEE,
            VVI, VII) is stored as its classic name, so that it runs the same code.
        priors: the checked priors, a dict {site: distribution} (empty for maximum
            likelihood and for the program's default prior).
        method: the M-step the priors call for, one of :data:`METHODS`.
        max_iter: EM iterations at most (0: the initialization).
        tol: convergence threshold on the change of the lower bound.
        reg_covar: added to the diagonal of every covariance.
        n_init: restarts; the best lower bound is kept.
        init_params: one of :data:`INIT_PARAMS`.
        weights_init, means_init, precisions_init: user starting values (checked against
            the data's shape by the fit), or None.
        seed: int or JAX key of the initialization.
        start_lower_bound: lower bound of the starting point (warm start).
        block_rows: rows per block of the E-step, None for the default.
        init_rows: rows of the initialization sample of out-of-core and sharded EM
            (None where the fit initializes on all rows).
    """

    n_components: int
    covariance_type: str
    priors: dict
    method: str
    max_iter: int
    tol: float
    reg_covar: float
    n_init: int
    init_params: str
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    seed: Any = 0
    start_lower_bound: float = -np.inf
    block_rows: int | None = None
    init_rows: int | None = None

    @property
    def with_scales(self) -> bool:
        """Whether the priors name ``scales`` (reported beside the variances)."""
        return "scales" in self.priors

    @property
    def inits(self) -> tuple[Any, Any, Any]:
        """(weights_init, means_init, precisions_init)."""
        return self.weights_init, self.means_init, self.precisions_init

    @property
    def key(self) -> jax.Array:
        """The seed as a JAX key."""
        return key_of(self.seed)

    @classmethod
    def create(cls, **keywords) -> "EMOptions":
        """:func:`check_options` (the same keywords)."""
        return check_options(**keywords)


def key_of(seed: int | jax.Array) -> jax.Array:
    """The JAX key of ``seed`` (a key is returned as it is): ``jax.random.key(seed)``.

    An int seed of the default threefry generator is wrapped from its two words, computed
    here (``[high, low]`` 32-bit words of the seed, the high word 0 in 32-bit mode),
    instead of by ``jax.random.key``, which compiles and runs two small programs.

    Example:
        >>> import jax
        >>> bool((jax.random.key_data(key_of(7)) == jax.random.key_data(jax.random.key(7))).all())
        True
    """
    if isinstance(seed, jax.Array):
        return seed
    seed = int(seed)
    if jax.config.jax_default_prng_impl != "threefry2x32" or not -(2**31) <= seed < 2**31:
        return jax.random.key(seed)
    high = 0xFFFFFFFF if seed < 0 and jax.config.jax_enable_x64 else 0
    words = np.array([high, seed & 0xFFFFFFFF], dtype=np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid value for '{name}': {value!r}; it must be an int >= {low}.")


def check_options(
    *,
    n_components: int,
    covariance_type: str = "full",
    priors: str | Mapping[str, dist.Distribution] | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: Any = None,
    means_init: Any = None,
    precisions_init: Any = None,
    seed: int | jax.Array = 0,
    start_lower_bound: float = -np.inf,
    block_rows: int | None = None,
    init_rows: int | None = None,
    n_features: int | None = None,
) -> EMOptions:
    """Validate the options of an EM fit once; the keywords are :func:`fit_em`'s.

    Args:
        n_components, covariance_type, priors, max_iter, tol, reg_covar, n_init: as in
            :func:`gaussmix.inference.em.fit_em`.
        init_params, weights_init, means_init, precisions_init, seed: as in ``fit_em``.
        start_lower_bound, block_rows: as in ``fit_em``.
        init_rows: rows of the initialization sample (out-of-core and sharded EM), at
            least ``n_components``; None where it does not apply.
        n_features: D, when known, to check the shapes of the priors.

    Returns:
        :class:`EMOptions`.

    Raises:
        ValueError: naming the option, its value and what it must be (scikit-learn's
            messages where it has them).

    Example:
        >>> check_options(n_components=3, priors="default").method
        'conjugate_map'
    """
    check_em_covariance_type(covariance_type)
    covariance_type = canonical_covariance_type(covariance_type)
    _check_int("n_components", n_components, 1)
    _check_int("max_iter", max_iter, 0)
    _check_int("n_init", n_init, 1)
    if init_rows is not None:
        _check_int("init_rows", init_rows, 1)
        if init_rows < n_components:
            raise ValueError(
                f"init_rows = {init_rows} is below n_components = {n_components}; the "
                "initialization needs at least one row per component."
            )
    for name, value in (("tol", tol), ("reg_covar", reg_covar)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"Invalid value for '{name}': {value!r}; it must be a finite number >= 0."
            )
    if init_params not in INIT_PARAMS:
        raise ValueError(
            f"Invalid value for 'init_params': {init_params!r}; it should be in "
            f"{list(INIT_PARAMS)}."
        )
    method, checked = check_priors(
        priors, covariance_type, n_components=n_components, n_features=n_features
    )
    return EMOptions(
        n_components=int(n_components),
        covariance_type=covariance_type,
        priors=checked,
        method=method,
        max_iter=int(max_iter),
        tol=float(tol),
        reg_covar=float(reg_covar),
        n_init=int(n_init),
        init_params=init_params,
        weights_init=weights_init,
        means_init=means_init,
        precisions_init=precisions_init,
        seed=seed,
        start_lower_bound=float(start_lower_bound),
        block_rows=block_rows,
        init_rows=None if init_rows is None else int(init_rows),
    )


def is_conjugate(priors: Mapping, covariance_type: str) -> bool:
    """Whether the user's priors keep the closed-form MAP M-step."""
    if "means" in priors or "scales" in priors:
        return False
    if "weights" in priors and not isinstance(priors["weights"], dist.Dirichlet):
        return False
    site = COVARIANCE_SITES[covariance_type]
    if site in priors:
        layout = COVARIANCE_LAYOUTS[covariance_type]
        family = dist.InverseWishart if layout in ("full", "tied") else dist.InverseGamma
        if not isinstance(base_distribution(priors[site]), family):
            return False
    return True


def check_priors(
    priors,
    covariance_type: str,
    *,
    n_components: int | None = None,
    n_features: int | None = None,
) -> tuple[str, dict]:
    """(method, priors): the M-step the priors call for, after the program's checks.

    Sites, supports, parameters and (given K and D) shapes are checked by
    :func:`gaussmix.models.mixture.check_priors`, the check NUTS and the program run too.
    """
    if priors is None:
        return "maximum_likelihood", {}
    if isinstance(priors, str):
        if priors != "default":
            raise ValueError(
                f"priors must be None (maximum likelihood), 'default' (MAP under the "
                f"program's default prior) or a dict {{site: distribution}}, got {priors!r}."
            )
        return "conjugate_map", {}
    if not isinstance(priors, Mapping):
        raise ValueError(
            "priors must be None, 'default' or a dict mapping a site name to a numpyro "
            f"distribution, got {type(priors).__name__}."
        )
    check_em_covariance_type(covariance_type)
    covariance_type = canonical_covariance_type(covariance_type)
    # a constrained model's priors are its storage layout's (the program's sites)
    layout = COVARIANCE_LAYOUTS[covariance_type]
    priors = check_program_priors(priors, layout, n_components=n_components, n_features=n_features)
    weights = priors.get("weights")
    if isinstance(weights, dist.Dirichlet) and np.any(np.asarray(weights.concentration) < 1):
        raise ValueError(
            "A Dirichlet weight prior with concentration < 1 has no MAP (the posterior "
            "is unbounded where a weight reaches 0); use concentration >= 1."
        )
    constrained = covariance_type not in COVARIANCE_TYPES
    if not is_conjugate(priors, covariance_type):
        if constrained:
            raise NotImplementedError(
                f"covariance_type={covariance_type!r} takes conjugate priors only (a "
                "Dirichlet on 'weights', an InverseWishart on 'covariances' or an "
                "InverseGamma on 'variances', as its storage layout "
                f"{layout!r} has them): generalized EM (other priors) is not implemented "
                "for the constrained models; sample_posterior takes any prior on the "
                "program's sites."
            )
        return "generalized_em", priors
    site = COVARIANCE_SITES[covariance_type]
    if constrained and layout == "diag" and site in priors:
        concentration = np.asarray(base_distribution(priors[site]).concentration)
        if concentration.ndim and np.any(concentration != concentration[..., :1]):
            raise ValueError(
                f"covariance_type={covariance_type!r} needs one InverseGamma concentration "
                "per component (its variances share a volume or a shape across features); "
                f"got concentrations that vary over the features: {concentration.tolist()}."
            )
    return "conjugate_map", priors

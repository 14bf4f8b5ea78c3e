"""NUTS on the Dirichlet-process and Dirichlet mixtures; the number of occupied components.

:func:`sample_dirichlet_mixture` samples
:func:`gaussmix.models.dirichlet_mixture.dirichlet_process_mixture` (truncated
stick-breaking) or :func:`~gaussmix.models.dirichlet_mixture.dirichlet_mixture` (finite
:math:`\\mathrm{Dirichlet}(\\alpha/K)`) with the mixture program's sampling machinery
(:mod:`gaussmix.inference.mixture_sampling`): its argument checks, its relabeling and its
dimension names, registered here as both programs' sampling hooks.

Start. Unless ``init`` is given, the chains start from EM under the default conjugate
prior with K = ``max_components`` components, its components sorted by decreasing weight
(the stick-breaking prior is not exchangeable: it expects the large weights on the first
sticks), and with the concentration at 1 when it is a latent site. A better start with
few occupied components is a variational fit (``BayesianGaussianMixture``; see
:func:`gaussmix._dirichlet_posterior.sample_posterior` for the estimator's path).

Relabeling. The draws are matched to the starting point by the Kullback-Leibler cost of
:func:`gaussmix.inference.relabel.relabel_mixture` (``method="match"``), in one dimension
too: ordering by the means, the finite mixture's rule in one dimension, would interleave
the empty components (means drawn from the prior) with the occupied ones. For the finite
Dirichlet the posterior is symmetric in the labels and this undoes label
switching. Under stick-breaking it is not symmetric (the prior orders the weights), but
labels may still switch between components of similar weight, and relabeling is a
harmless post-processing: every label-free quantity (the density, the log-likelihood,
LOO, the number of occupied components) is unchanged by it. Most sticks are empty:
an empty component's mean and covariance are draws from their prior, its "label" carries
no information, and matching it to the reference's empty components is arbitrary; read
only the occupied components' parameters.

Occupied components. For each draw :math:`s` a label is drawn for every row from its
responsibilities, :math:`z_n^{(s)} \\sim \\mathrm{Categorical}(r_{n\\cdot}^{(s)})`,
:math:`r_{nk}^{(s)} \\propto \\pi^{(s)}_k \\mathcal{N}(x_n \\mid \\mu^{(s)}_k,
\\Sigma^{(s)}_k)`, and the number of components holding at least one row is recorded as
``occupied_components`` (chain, draw) in the ``posterior`` group; the number with weight
above ``weight_threshold`` as ``weighted_components``. Their histograms are the posterior
of the number of components; ``gaussmix.compare`` ranks the program against finite
mixtures by PSIS-LOO (the pointwise log-likelihood is the marginal one).
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.mcmc.driver import sample
from gaussmix.inference.mixture_sampling import (
    mixture_dims,
    mixture_sampling_hooks,
    posterior_responsibilities,
    with_latent_values,
)
from gaussmix.inference.relabel import label_switching_fraction, relabel_mixture
from gaussmix.inference.sampling_hooks import PostprocessedDraws, register_sampling_hooks
from gaussmix.models.dirichlet_mixture import (
    check_concentration,
    check_count,
    dirichlet_mixture,
    dirichlet_process_mixture,
)
from gaussmix.models.mixture import component_log_density
from gaussmix.models.priors import COVARIANCE_SITES, canonical_covariance_type

__all__ = [
    "NUTS_OPTIONS",
    "WEIGHT_PRIOR_TYPES",
    "dirichlet_sampling_hooks",
    "occupied_components",
    "pad_components",
    "sample_dirichlet_mixture",
]

#: scikit-learn's ``weight_concentration_prior_type`` -> the program.
WEIGHT_PRIOR_TYPES = {
    "dirichlet_process": dirichlet_process_mixture,
    "dirichlet_distribution": dirichlet_mixture,
}

_COUNT_ARGUMENT = {dirichlet_process_mixture: "max_components", dirichlet_mixture: "n_components"}


def _start(x: np.ndarray, kwargs: Mapping, seed: int) -> dict | None:
    """EM under the default conjugate prior, components by decreasing weight."""
    import warnings

    from gaussmix.inference import em

    covariance_type = kwargs.get("covariance_type", "full")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            result = em.fit_em(
                x,
                n_components=kwargs["n_components"],
                covariance_type=covariance_type,
                priors="default",
                sample_weight=kwargs.get("sample_weight"),
                seed=seed,
            )
    except ValueError:
        return None  # the driver's MAP search instead
    params = {name: np.asarray(value) for name, value in result.params.items()}
    if not all(bool(np.all(np.isfinite(value))) for value in params.values()):
        return None
    order = np.argsort(-params["weights"], kind="stable")
    tied = canonical_covariance_type(covariance_type) == "tied"
    point = {
        name: value if (tied and name == "covariance") else value[order]
        for name, value in params.items()
    }
    return with_latent_values(point, covariance_type)


def pad_components(
    point: Mapping[str, ArrayLike],
    n_components: int,
    x: ArrayLike,
    covariance_type: str,
    *,
    empty_weight: float = 1e-3,
) -> dict:
    """A mixture point of fewer components padded to ``n_components``, by weight.

    The added components are nearly empty: weight ``empty_weight`` each (the others
    scaled down to keep the sum at one), mean and covariance the data's (broad, inside
    every prior's support). The components are then sorted by decreasing weight, the
    order the stick-breaking prior expects. A start with few occupied components (EM at
    BIC's choice of K, a variational fit) lets NUTS find the posterior of a truncated
    Dirichlet process faster than EM with all ``n_components``, whose split components
    NUTS must empty one by one.

    Args:
        point: ``weights`` (k,), ``means`` (k, D) and the covariance site, k <= K.
        n_components: K.
        x: (N, D) data.
        covariance_type: "full", "tied", "diag" or "spherical".
        empty_weight: weight of each added component, in (0, 1 / K).

    Example:
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> point = {"weights": np.array([1.0]), "means": np.array([[1.5]]),
        ...          "variances": np.array([1.0])}
        >>> padded = pad_components(point, 3, x, "spherical")
        >>> padded["weights"].round(3).tolist(), padded["means"][:, 0].tolist()
        ([0.998, 0.001, 0.001], [1.5, 1.5, 1.5])
    """
    covariance_type = canonical_covariance_type(covariance_type)
    weights = np.asarray(point["weights"], float)
    given = weights.shape[-1]
    if given > n_components:
        raise ValueError(
            f"The starting point has {given} components, more than the {n_components} of "
            "the program."
        )
    if not 0.0 < empty_weight < 1.0 / n_components:
        raise ValueError(f"empty_weight must lie in (0, 1/K), got {empty_weight}.")
    site = COVARIANCE_SITES[covariance_type]
    x = np.asarray(x, float)
    x = x.reshape((-1, 1)) if x.ndim == 1 else x
    extra = n_components - given
    covariance = np.atleast_2d(np.cov(x, rowvar=False))
    padding = {
        "full": np.broadcast_to(covariance, (extra, *covariance.shape)),
        "diag": np.broadcast_to(np.diag(covariance), (extra, x.shape[1])),
        "spherical": np.full((extra,), np.mean(np.diag(covariance))),
    }
    padded = dict(point)
    padded["weights"] = np.concatenate(
        [weights / weights.sum() * (1.0 - extra * empty_weight), np.full(extra, empty_weight)]
    )
    padded["means"] = np.concatenate(
        [np.asarray(point["means"], float), np.broadcast_to(x.mean(0), (extra, x.shape[1]))]
    )
    if covariance_type != "tied":
        if covariance_type not in padding:
            raise ValueError(
                f"Padding a start is available for full, tied, diag and spherical "
                f"covariances, not {covariance_type!r}; give all {n_components} components."
            )
        padded[site] = np.concatenate([np.asarray(point[site], float), padding[covariance_type]])
    order = np.argsort(-padded["weights"], kind="stable")
    for name in ("weights", "means") + (() if covariance_type == "tied" else (site,)):
        padded[name] = padded[name][order]
    return padded


def dirichlet_sampling_hooks(program, args: tuple, kwargs: dict):
    """The sampling hooks of ``program`` (one of :data:`WEIGHT_PRIOR_TYPES`' programs):
    the mixture program's checks, relabeling and dimension names, the EM start sorted by
    weight (module docstring), the concentration named as a scalar."""
    count = _COUNT_ARGUMENT[program]
    if count not in kwargs:
        raise ValueError(f"Sampling {program.__name__} needs {count}=.")
    check_count(count, kwargs[count])
    concentration = kwargs.get("concentration", 1.0)
    check_concentration(concentration)
    mixture_kwargs = {
        name: value for name, value in kwargs.items() if name not in (count, "concentration")
    }
    mixture_kwargs["n_components"] = kwargs[count]
    hooks = mixture_sampling_hooks(args, mixture_kwargs)
    x = np.asarray(args[0] if args else kwargs["x"])
    x = x.reshape((-1, 1)) if x.ndim == 1 else x
    if kwargs.get("nan_policy", "raise") == "raise" and not np.all(np.isfinite(x)):
        raise ValueError(
            "x contains NaN or infinity; remove or impute those rows first (the number of "
            "occupied components is counted on complete rows)."
        )

    def initial_values(seed: int) -> dict | None:
        point = _start(x, mixture_kwargs, seed)
        if point is not None and isinstance(concentration, dist.Distribution):
            point["concentration"] = np.asarray(1.0, x.dtype)
        return point

    def dims(samples: Mapping, observed: tuple, sample_ndim: int = 2) -> dict:
        names = mixture_dims(samples, observed, sample_ndim)
        if "concentration" in samples:
            names["concentration"] = []
        return names

    def postprocess(samples: dict, start: Mapping, source: str) -> PostprocessedDraws:
        import xarray as xr

        reference = {name: np.asarray(value) for name, value in start.items()}
        samples = {name: np.asarray(value) for name, value in samples.items()}
        relabeled, permutation = relabel_mixture(
            samples, reference, mixture_kwargs.get("covariance_type", "full"), method="match"
        )
        site_dims = mixture_dims(reference, (), sample_ndim=0)
        group = xr.Dataset(
            {
                f"reference_{name}": (site_dims[name], value)
                for name, value in reference.items()
                if name in site_dims
            },
            attrs={"description": "the point whose labelling the draws follow (the start)"},
        )
        attrs = {
            "relabel_method": "match",
            "label_switching": label_switching_fraction(permutation),
            "init": source,
        }
        relabeled = {name: np.asarray(value) for name, value in relabeled.items()}
        return PostprocessedDraws(relabeled, attrs, {"mixture": group})

    # NumPyro's potential of this program: the finite mixture's closed form has another
    # prior on the weights (a symmetric Dirichlet(1), no concentration, no stick breaking)
    return hooks._replace(
        initial_values_fn=initial_values,
        postprocess_fn=postprocess,
        dims_fn=dims,
        potential_fn_gen=None,
    )


for _program in WEIGHT_PRIOR_TYPES.values():
    register_sampling_hooks(
        _program,
        lambda args, kwargs, program=_program: dirichlet_sampling_hooks(program, args, kwargs),
    )


def _occupied_impl(x, row_weights, weights, means, covariance, keys, covariance_type):
    n_components = weights.shape[-1]

    def one_draw(draw):
        w, m, c, key = draw
        safe = jnp.where(w > 0, w, 1.0)
        logits = component_log_density(x, m, c, covariance_type) + jnp.where(
            w > 0, jnp.log(safe), -jnp.inf
        )
        labels = jax.random.categorical(jax.random.wrap_key_data(key), logits, axis=-1)
        rows = jnp.zeros((n_components,), x.dtype).at[labels].add(row_weights)
        return jnp.sum(rows > 0)

    return lax.map(one_draw, (weights, means, covariance, keys))


_occupied = compilation.jit(_occupied_impl, static_argnames=("covariance_type",))


def occupied_components(
    x: ArrayLike,
    weights: ArrayLike,
    means: ArrayLike,
    covariance: ArrayLike,
    covariance_type: str,
    *,
    seed: int = 0,
    sample_weight: ArrayLike | None = None,
) -> np.ndarray:
    """Number of components holding at least one row, one labelling drawn per draw.

    Args:
        x: (N, D) data.
        weights: (S, K) draws; means (S, K, D); covariance: the covariance site's (S, ...)
            draws.
        covariance_type: of the program.
        seed: of the labels' draws.
        sample_weight: (N,); rows of weight 0 occupy nothing.

    Returns:
        (S,) integer counts in 1..K.

    Example:
        >>> x = np.array([[-5.0], [-5.1], [5.0]])
        >>> occupied_components(x, np.array([[0.5, 0.5, 1e-9]]), np.array([[[-5.0], [5.0], [0.0]]]),
        ...                     np.ones((1, 3)), "spherical").tolist()
        [2]
    """
    x = np.asarray(x)
    x = x.reshape((-1, 1)) if x.ndim == 1 else x
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(float)
    row_weights = np.ones(x.shape[0], dtype) if sample_weight is None else sample_weight
    weights = np.asarray(weights, dtype)
    keys = jax.random.key_data(jax.random.split(jax.random.key(seed), weights.shape[0]))
    counts = _occupied(
        jax.device_put(x.astype(dtype)),
        jax.device_put(np.asarray(row_weights, dtype)),
        jax.device_put(weights),
        jax.device_put(np.asarray(means, dtype)),
        jax.device_put(np.asarray(covariance, dtype)),
        keys,
        canonical_covariance_type(covariance_type),
    )
    return np.asarray(counts)


#: NUTS settings under the user's ``nuts_options``: nearly empty components leave their
#: parameters on the prior, funnels in which the default step size (target 0.8) diverges
#: in about a third of the transitions; 0.95 takes smaller steps.
NUTS_OPTIONS = {"target_accept_prob": 0.95}


def sample_dirichlet_mixture(
    x: ArrayLike,
    *,
    max_components: int,
    weight_concentration_prior_type: str = "dirichlet_process",
    concentration: float | dist.Distribution = 1.0,
    covariance_type: str = "full",
    priors: Mapping[str, Any] | None = None,
    sample_weight: ArrayLike | None = None,
    prior_parameters=None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    progress_bar: bool | None = None,
    init: Mapping[str, ArrayLike] | None = None,
    weight_threshold: float = 0.01,
    nuts_options: Mapping[str, Any] | None = None,
):
    """NUTS on a Dirichlet-process (or Dirichlet) mixture; posterior of the number of
    occupied components.

    Args:
        x: (N, D) or (N,) data without NaN.
        max_components: K >= 1, the truncation (or the finite mixture's K).
        weight_concentration_prior_type: "dirichlet_process" (stick-breaking) or
            "dirichlet_distribution" (:math:`\\mathrm{Dirichlet}(\\alpha/K)`).
        concentration: :math:`\\alpha > 0`, or a prior on it (e.g. ``Gamma(1.0, 1.0)``).
        covariance_type, priors, sample_weight, prior_parameters: as in
            :func:`gaussmix.models.gaussian_mixture` (no ``priors["weights"]``).
        num_warmup, num_samples, num_chains, seed, progress_bar, init, nuts_options: as
            in :func:`~gaussmix.inference.mcmc.sample` (``nuts_options`` over
            :data:`NUTS_OPTIONS`); ``init`` may have fewer
            components than K (:func:`pad_components` adds nearly empty ones), e.g. the
            EM fit at BIC's choice of K.
        weight_threshold: in [0, 1): ``weighted_components`` counts the weights above it.

    Returns:
        The DataTree of :func:`~gaussmix.inference.mcmc.sample`, its ``posterior``
        with ``occupied_components`` and ``weighted_components`` (chain, draw), and the
        group ``mixture`` with the posterior mean ``responsibilities`` (data, components).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(-4, 1, 40), rng.normal(4, 1, 40)])
        >>> tree = sample_dirichlet_mixture(x, max_components=3, covariance_type="spherical",
        ...     num_warmup=100, num_samples=100, num_chains=1, progress_bar=False)
        >>> counts = tree.posterior["occupied_components"].values
        >>> bool(np.mean(counts == 2) > 0.5)
        True
    """
    if weight_concentration_prior_type not in WEIGHT_PRIOR_TYPES:
        raise ValueError(
            f"Invalid weight_concentration_prior_type {weight_concentration_prior_type!r}; "
            f"choose one of {list(WEIGHT_PRIOR_TYPES)}."
        )
    threshold = float(weight_threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"weight_threshold must lie in [0, 1), got {weight_threshold!r}.")
    program = WEIGHT_PRIOR_TYPES[weight_concentration_prior_type]
    kwargs = {
        _COUNT_ARGUMENT[program]: max_components,
        "concentration": concentration,
        "covariance_type": covariance_type,
    }
    for name, value in (
        ("priors", priors),
        ("sample_weight", sample_weight),
        ("prior_parameters", prior_parameters),
    ):
        if value is not None:
            kwargs[name] = value
    if isinstance(init, Mapping):
        if np.shape(init.get("weights", ()))[-1:] not in ((), (max_components,)):
            init = pad_components(init, max_components, x, covariance_type)
        init = with_latent_values(init, covariance_type)
        if isinstance(concentration, dist.Distribution) and "concentration" not in init:
            init["concentration"] = 1.0
    tree = sample(
        program,
        x,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        init=init,
        progress_bar=progress_bar,
        nuts_options={**NUTS_OPTIONS, **dict(nuts_options or {})},
        **kwargs,
    )
    return _with_component_counts(tree, covariance_type, seed, sample_weight, threshold)


def _with_component_counts(tree, covariance_type, seed, sample_weight, threshold):
    import xarray as xr

    covariance_type = canonical_covariance_type(covariance_type)
    x = tree.observed_data["x"].values
    posterior = tree.posterior.to_dataset()
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    site = COVARIANCE_SITES[covariance_type]

    def flat(name):
        values = posterior[name].values
        return values.reshape((chains * draws, *values.shape[2:]))

    counts = occupied_components(
        x,
        flat("weights"),
        flat("means"),
        flat(site),
        covariance_type,
        seed=int(seed) if isinstance(seed, int | np.integer) else 0,
        sample_weight=sample_weight,
    ).reshape((chains, draws))
    posterior["occupied_components"] = xr.DataArray(
        counts,
        dims=("chain", "draw"),
        attrs={"description": "components with at least one row, labels drawn per draw"},
    )
    posterior["weighted_components"] = xr.DataArray(
        np.sum(posterior["weights"].values > threshold, axis=-1),
        dims=("chain", "draw"),
        attrs={"description": f"components of weight above {threshold}"},
    )
    posterior.attrs["weight_threshold"] = threshold
    tree["posterior"] = posterior
    responsibilities = posterior_responsibilities(x, tree, covariance_type)
    group = tree["mixture"].to_dataset() if "mixture" in tree.children else xr.Dataset()
    group["responsibilities"] = xr.DataArray(
        np.asarray(responsibilities),
        dims=("data", "components"),
        attrs={"description": "posterior mean of p(z_n = k | x_n, theta) over the draws"},
    )
    tree["mixture"] = group
    return tree

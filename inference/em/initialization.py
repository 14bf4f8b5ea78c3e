"""Starting parameters of an EM restart (scikit-learn's ``_initialize_parameters``).

Responsibilities from ``init_params`` — k-means labels (k-means++ seeding, then Lloyd),
the k-means++ seeds alone, uniform random responsibilities, or random rows of the data —
then one M-step (maximum likelihood; the conjugate MAP under a conjugate prior). User
starting values replace what they give (all three: no data is read).

Restart ``i`` of a fit uses ``fold_in(dataset_key, i)`` with dataset ``b``'s key
``fold_in(key, b)`` (:func:`restart_key`): restart 0 does not depend on ``n_init``, so
more restarts can only raise the best lower bound, and an unbatched fit equals dataset 0
of a batch.

Example:
    >>> import numpy as np
    >>> from gaussmix.inference.em.options import check_options
    >>> x = np.array([[0.0], [0.2], [5.0], [5.2]])
    >>> options = check_options(n_components=2, covariance_type="diag")
    >>> start = initialize(restart_key(0), x, None, options)
    >>> sorted(np.round(np.asarray(start.means[:, 0]), 1).tolist())
    [0.1, 5.1]
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.em.core import EMContext, StepConfig, make_context
from gaussmix.inference.em.features import DataBlocks, block_size, data_blocks, design_matrix
from gaussmix.inference.em.kmeans import kmeans_plusplus, lloyd
from gaussmix.inference.em.maximization import maximization_step
from gaussmix.inference.em.options import EMOptions, hierarchical_model, key_of
from gaussmix.inference.em.parameters import (
    MixtureParameters,
    covariances_from_precisions_cholesky,
    precisions_cholesky_from_precisions,
)
from gaussmix.inference.em.statistics import SufficientStatistics, scan_statistics
from gaussmix.inference.em.validation import as_float_array, check_init
from gaussmix.models.priors import (
    MixturePriorParameters,
    covariance_layout,
    default_prior_parameters,
)

__all__ = [
    "PRECISION_NDIM",
    "check_inits",
    "initial_parameters",
    "initial_statistics",
    "initialize",
    "prior_parameters_of",
    "restart_key",
]

#: Covariance type -> ndim of one dataset's precisions (a batch adds a leading axis).
PRECISION_NDIM = {"full": 3, "tied": 2, "diag": 2, "spherical": 1}


def restart_key(seed: int | jax.Array, restart: int = 0, dataset: int = 0) -> jax.Array:
    """The key of restart ``restart`` of dataset ``dataset`` of a fit seeded with ``seed``.

    Example:
        >>> import jax
        >>> expected = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0), 2)
        >>> key = restart_key(0, restart=2)
        >>> bool((jax.random.key_data(key) == jax.random.key_data(expected)).all())
        True
    """
    key = key_of(seed)
    return jax.random.fold_in(jax.random.fold_in(key, dataset), restart)


def prior_parameters_of(x: jax.Array, covariance_type: str) -> MixturePriorParameters:
    """The program's default prior for data ``x`` (N, D), in ``x``'s dtype."""
    return MixturePriorParameters(
        *(jnp.asarray(a, x.dtype) for a in default_prior_parameters(x, covariance_type))
    )


def check_inits(options: EMOptions, n_features: int, dtype, n_datasets: int = 1) -> tuple:
    """(weights_init, means_init, precisions_init) of ``options`` as checked arrays of
    ``dtype`` (or None), one dataset's shapes or with a leading (``n_datasets``,) axis."""
    n_components, covariance_type = options.n_components, options.covariance_type
    layout = covariance_layout(covariance_type)
    precision_shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[layout]
    return (
        check_init(
            options.weights_init, (n_components,), "weights", covariance_type, dtype, n_datasets
        ),
        check_init(
            options.means_init,
            (n_components, n_features),
            "means",
            covariance_type,
            dtype,
            n_datasets,
        ),
        check_init(
            options.precisions_init,
            precision_shape,
            f"{covariance_type} precision",
            covariance_type,
            dtype,
            n_datasets,
        ),
    )


def initial_parameters(
    key: jax.Array,
    blocks: DataBlocks,
    context: EMContext,
    config: StepConfig,
    init_params: str,
    inits: tuple,
    labels: jax.Array | None = None,
    restart: jax.Array | int = 0,
) -> MixtureParameters:
    """Initial parameters of one restart from a dataset's blocks (pure, jittable).

    Args:
        key: the restart's key (:func:`restart_key`).
        blocks: the dataset's :class:`gaussmix.inference.em.features.DataBlocks`.
        context: the fit's :class:`gaussmix.inference.em.core.EMContext` (centre,
            ``reg_covar``, conjugate prior).
        config: the fit's :class:`gaussmix.inference.em.core.StepConfig`.
        init_params: "kmeans", "k-means++", "random", "random_from_data" or "hc".
        inits: (weights_init, means_init, precisions_init), each an array or None.
        labels: "hc" only: (N,) int labels 0..K-1 of the dataset's unpadded rows
            (:func:`gaussmix.inference.em.hierarchical.start_labels`, computed on the
            host and passed in as an array argument of the program).
        restart: "hc" only: the restart's index; restart 0 starts from ``labels``, the
            others from k-means (so more restarts can only add starts).

    Returns:
        :class:`MixtureParameters`.
    """
    weights_init, means_init, precisions_init = inits
    covariance_type = config.covariance_type
    if weights_init is not None and means_init is not None and precisions_init is not None:
        factor = precisions_cholesky_from_precisions(precisions_init, covariance_type)
        covariances = covariances_from_precisions_cholesky(factor, covariance_type)
        return MixtureParameters(weights_init, means_init, covariances, factor)
    statistics = initial_statistics(key, blocks, config, init_params, labels, restart)
    # the conjugate MAP under a conjugate prior, else maximum likelihood
    prior = context.conjugate_prior if config.method == "conjugate_map" else None
    parameters = maximization_step(
        statistics,
        covariance_type=covariance_type,
        centre=context.centre,
        reg_covar=context.reg_covar,
        prior=prior,
    )
    weights, means, covariances, factor = parameters
    if weights_init is not None:
        weights = weights_init
    if means_init is not None:
        means = means_init
    if precisions_init is not None:
        factor = precisions_cholesky_from_precisions(precisions_init, covariance_type)
        covariances = covariances_from_precisions_cholesky(factor, covariance_type)
    return MixtureParameters(weights, means, covariances, factor)


def initial_statistics(
    key: jax.Array,
    blocks: DataBlocks,
    config: StepConfig,
    init_params: str,
    labels: jax.Array | None = None,
    restart: jax.Array | int = 0,
) -> SufficientStatistics:
    """Statistics of a restart's initial responsibilities (pure, jittable).

    The responsibilities that ``init_params`` gives (k-means labels, the k-means++ seeds
    alone, uniform random responsibilities, random rows of the data, or hc's labels),
    summed as the E-step sums them; :func:`initial_parameters` takes one M-step of them,
    the variational fit (:mod:`gaussmix.inference.em.variational`) its own update.

    Args:
        key, blocks, config, init_params, labels, restart: as for
            :func:`initial_parameters`.
    """
    covariance_type, n_components = config.covariance_type, config.n_components
    x_blocks, w_blocks = blocks.x, blocks.weight
    dtype = x_blocks.dtype
    block_rows = x_blocks.shape[1]
    x_flat = x_blocks.reshape(-1, x_blocks.shape[-1])
    w_flat = w_blocks.reshape(-1)
    labels_given = labels
    labels = None

    def kmeans_labels():
        seed_key, _ = jax.random.split(key)
        centers, _ = kmeans_plusplus(x_flat, n_components, key=seed_key, sample_weight=w_flat)
        return lloyd(x_flat, centers, sample_weight=w_flat).labels

    if init_params == "kmeans":
        labels = kmeans_labels()
    elif hierarchical_model(init_params) is not None:
        if labels_given is None:
            raise ValueError(
                "init_params='hc' needs the start's labels (start_labels of the data, "
                "computed on the host): pass labels=..."
            )
        # padded rows (beyond the data) belong to no component, as in k-means++'s start
        padding = x_flat.shape[0] - labels_given.shape[-1]
        hc_labels = jnp.pad(labels_given.astype(jnp.int32), (0, padding), constant_values=-1)
        if isinstance(restart, int) and restart == 0:
            labels = hc_labels
        else:
            labels = lax.cond(
                restart == 0, lambda: hc_labels, lambda: kmeans_labels().astype(jnp.int32)
            )
    elif init_params == "k-means++":
        _, indices = kmeans_plusplus(x_flat, n_components, key=key, sample_weight=w_flat)
        labels = (
            jnp.full(x_flat.shape[0], -1, jnp.int32)
            .at[indices]
            .set(jnp.arange(n_components, dtype=jnp.int32))
        )
    elif init_params == "random_from_data":
        positive = w_flat > 0
        scores = jnp.where(positive, jax.random.uniform(key, w_flat.shape, dtype), -1.0)
        _, indices = lax.top_k(scores, n_components)
        labels = (
            jnp.full(x_flat.shape[0], -1, jnp.int32)
            .at[indices]
            .set(jnp.arange(n_components, dtype=jnp.int32))
        )
    label_blocks = None if labels is None else labels.reshape(-1, block_rows)
    design = jnp.arange(n_components)

    def responsibility_fn(index, x_block, features):
        if label_blocks is None:
            uniform = jax.random.uniform(
                jax.random.fold_in(key, index), (x_block.shape[0], n_components), dtype
            )
            resp = uniform / jnp.sum(uniform, axis=1, keepdims=True)
        else:
            resp = (label_blocks[index][:, None] == design).astype(dtype)
        norm = jnp.zeros(x_block.shape[0], dtype)
        if features is None:
            features = design_matrix(x_block, covariance_type)
        return norm, resp, jnp.ones_like(norm), features

    return scan_statistics(blocks, responsibility_fn, n_components, covariance_type)


def _initialize(key, x, sample_weight, inits, priors, reg_covar, block_rows, init_params, config):
    blocks = data_blocks(x, sample_weight, block_rows, config.covariance_type)
    prior_parameters = None
    if config.method != "maximum_likelihood":
        prior_parameters = prior_parameters_of(x, config.covariance_type)
    context = make_context(
        config,
        centre=blocks.centre,
        reg_covar=reg_covar,
        tol=0.0,
        priors=priors,
        prior_parameters=prior_parameters,
    )
    return initial_parameters(key, blocks, context, config, init_params, inits)


_initialize_jit = compilation.jit(
    _initialize, static_argnames=("block_rows", "init_params", "config")
)


def initialize(
    key: jax.Array,
    x: ArrayLike,
    sample_weight: ArrayLike | None,
    options: EMOptions,
) -> MixtureParameters:
    """Starting parameters of one restart on data ``x`` (N, D), as :func:`fit_em` starts.

    The same start as restart ``i`` of ``fit_em(x, ...)`` given
    ``key = restart_key(options.seed, i)``: the same blocks of ``options.block_rows``
    rows (random responsibilities are drawn per block), the program's default prior of
    ``x`` for a conjugate MAP. One compiled program per shape and options.

    Args:
        key: the restart's key (:func:`restart_key`).
        x: (N, D) data.
        sample_weight: (N,) non-negative weights, or None.
        options: validated :class:`gaussmix.inference.em.options.EMOptions`; its
            ``init_params``, user inits, ``reg_covar``, priors and ``block_rows`` apply.

    Returns:
        :class:`MixtureParameters`.
    """
    if hierarchical_model(options.init_params) is not None:
        raise ValueError(
            f"init_params={options.init_params!r} needs the data in memory (the hierarchical clustering of "
            "the rows): fit in memory (fit_em, GaussianMixture.fit), or use "
            "init_params='kmeans' (or 'k-means++', 'random', 'random_from_data') out of "
            "core and sharded."
        )
    x = as_float_array(x, "x")
    dtype = x.dtype
    n_samples, n_features = x.shape
    weight = (
        np.ones(n_samples, dtype)
        if sample_weight is None
        else as_float_array(sample_weight, "sample_weight", dtype)
    )
    block = block_size(
        n_samples,
        n_features,
        options.n_components,
        options.covariance_type,
        dtype.itemsize,
        options.block_rows,
    )
    return _initialize_jit(
        key,
        x,
        weight,
        check_inits(options, n_features, dtype),
        options.priors,
        np.asarray(options.reg_covar, dtype),
        block_rows=block,
        init_params=options.init_params,
        config=StepConfig.from_options(options),
    )

"""NUTS on the Gaussian mixture: EM start, relabeled draws, posterior responsibilities.

What is special about :func:`gaussmix.models.gaussian_mixture` under NUTS lives here, and
reaches the generic driver (:func:`gaussmix.inference.mcmc.sample`) through its sampling
hooks (:mod:`gaussmix.inference.sampling_hooks`), registered when this module is imported:

* the chains start at the EM answer (:func:`gaussmix.inference.em.fit_em` under the
  program's prior) unless the caller passes ``init``;
* the draws are relabeled (:mod:`gaussmix.inference.relabel`) to the labelling of the
  starting point (``init``, else the EM answer) before anything is summarized. In one
  dimension they are ordered by their means: ascending after an EM start; after ``init``,
  the ordered components take the labels of ``init``'s components of the same rank, so
  the draws keep ``init``'s labelling. The ``posterior`` group's attributes say how
  (``relabel_method``) and how often labels switched (``label_switching``); the group
  ``mixture`` holds the reference point as ``reference_<site>``;
* the sites get named dimensions (``components``, ``features``, ``data``).

The log-likelihood is the marginal one (the component index is summed out), so
``arviz_stats.loo`` is right; on imperfect data (``nan_policy="marginalize"``,
``measurement_covariances``, ``background_volume``) it is each row's density of its
observed coordinates under :math:`\\Sigma_k + S_n`, plus the background's
:math:`\\pi_0 / V` (:mod:`gaussmix.models.imperfect_data`), and a background keeps its
place when the K Gaussian components are relabeled. :func:`sample_mixture` adds the posterior mean of the
responsibilities.
"""

import contextlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference import compilation
from gaussmix.inference.diagnostics import SamplingWarning
from gaussmix.inference.mcmc.driver import sample
from gaussmix.inference.relabel import (
    apply_permutation,
    label_switching_fraction,
    relabel_mixture,
    relabeling_permutation,
    sort_components,
)
from gaussmix.inference.sampling_hooks import (
    PostprocessedDraws,
    SamplingHooks,
    register_sampling_hooks,
)
from gaussmix.models.eigen_covariance import EIGEN_MODELS, eigen_sites, latent_values
from gaussmix.models.imperfect_data import (
    check_measurement_covariances,
    check_missing_data,
    find_missing_patterns,
    imperfect_component_log_density,
)
from gaussmix.models.mixture import check_priors, full_covariance_potential, gaussian_mixture
from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    COVARIANCE_SITES,
    canonical_covariance_type,
    check_covariance_type,
)

__all__ = [
    "imperfect_data_arguments",
    "mixture_dims",
    "mixture_sampling_hooks",
    "posterior_responsibilities",
    "relabel_mixture_draws",
    "sample_mixture",
    "with_latent_values",
]


def mixture_sampling_hooks(args: tuple, kwargs: dict) -> SamplingHooks:
    """The sampling hooks of :func:`gaussmix.models.gaussian_mixture` for its arguments.

    Checks the arguments with concrete values (data given, covariance type, priors)
    before EM or NUTS trace anything.

    Args:
        args: the program's positional arguments (``x``).
        kwargs: its keyword arguments (``n_components``, ``covariance_type``, ``priors``,
            ``sample_weight``, ...).

    Returns:
        Hooks that start the chains at the EM answer, relabel the draws and name the
        dimensions.

    Raises:
        ValueError: no data, or an invalid covariance type or prior.
    """
    x = args[0] if args else kwargs.get("x")
    if x is None:
        raise ValueError("Sampling the mixture posterior needs data: pass x.")
    x = np.asarray(x)
    covariance_type = kwargs.get("covariance_type", "full")
    check_covariance_type(covariance_type)
    background = kwargs.get("background_log_density") is not None
    priors = kwargs.get("priors")
    if background and isinstance(priors, Mapping):  # proportions: checked by the program
        priors = {name: value for name, value in priors.items() if name != "proportions"}
    check_priors(
        priors,
        covariance_type,
        n_components=kwargs["n_components"],
        n_features=1 if x.ndim < 2 else x.shape[-1],
    )
    x = x.reshape((-1, 1)) if x.ndim == 1 else x
    if kwargs.get("nan_policy", "raise") == "marginalize":
        check_missing_data(x)

    def initial_values(seed: int) -> dict | None:
        return _em_answer(x, covariance_type, seed, kwargs)

    def postprocess(samples: dict, start: Mapping, source: str) -> PostprocessedDraws:
        import xarray as xr

        reference = with_proportions({name: np.asarray(value) for name, value in start.items()})
        samples, reference, method, switching = relabel_mixture_draws(
            samples, reference, covariance_type, keep_reference_labels=source == "init"
        )
        site_dims = mixture_dims(reference, (), sample_ndim=0)
        group = xr.Dataset(
            {
                f"reference_{name}": (site_dims[name], np.asarray(value))
                for name, value in reference.items()
                if name in site_dims
            },
            attrs={"description": "the point whose labelling the draws follow (the MAP)"},
        )
        attrs = {"relabel_method": method, "label_switching": switching, "init": source}
        return PostprocessedDraws(samples, attrs, {"mixture": group})

    return SamplingHooks(
        initial_values_fn=initial_values,
        initial_values_label="em",
        postprocess_fn=postprocess,
        dims_fn=mixture_dims,
        potential_fn_gen=_closed_form_potential(covariance_type, kwargs),
    )


#: Arguments of the program whose potential has a closed form (anything else given:
#: sample weights, missing entries, measurement errors, a background, uses NumPyro's).
_CLOSED_FORM_ARGUMENTS = frozenset(
    {"x", "n_components", "covariance_type", "priors", "prior_parameters", "nan_policy"}
)


def _closed_form_potential(covariance_type: str, kwargs: dict):
    """The hooks' ``potential_fn_gen``: :func:`_full_covariance_potential_fn_gen` for full
    covariances under the default priors on complete, unweighted data (the first
    ``sample_posterior``'s programs compile faster with it), else None."""
    given = {name for name, value in kwargs.items() if value is not None}
    p = kwargs.get("prior_parameters")
    if (
        canonical_covariance_type(covariance_type) != "full"
        or given - _CLOSED_FORM_ARGUMENTS
        or kwargs.get("priors")
        or kwargs.get("nan_policy", "raise") != "raise"
        # the closed form's constants take the scalar hyperparameters the prior documents
        or (
            p is not None
            and any(
                np.ndim(value)
                for value in (p.weight_concentration, p.mean_precision, p.degrees_of_freedom)
            )
        )
    ):
        return None
    return _full_covariance_potential_fn_gen


def _full_covariance_potential_fn_gen(*args, **arguments):
    """:func:`~gaussmix.models.mixture.full_covariance_potential` of the program's
    arguments (one function: it is part of the compiled programs' keys)."""
    x = args[0] if args else arguments["x"]
    return full_covariance_potential(
        x, arguments["n_components"], arguments.get("prior_parameters")
    )


def with_latent_values(point: Mapping, covariance_type: str) -> dict:
    """``point`` with the latent sites of a constrained model added where absent.

    A starting point in the storage layout (an EM fit, a ``GaussianMixture``'s
    ``params_``: ``weights``, ``means`` and the covariance site) names no volume, shape
    or orientation; they are read off its covariance site
    (:func:`gaussmix.models.eigen_covariance.latent_values`). Other types, and points
    that name the latent sites already, are returned as they are (a new dict).

    Example:
        >>> import numpy as np
        >>> point = {"means": np.zeros((2, 2)), "variances": np.array([[2.0, 0.5], [4.0, 1.0]])}
        >>> sorted(with_latent_values(point, "VEI"))
        ['log_shape', 'means', 'variances', 'volumes']
    """
    point = dict(point)
    covariance_type = canonical_covariance_type(covariance_type)
    site = COVARIANCE_SITES[covariance_type]
    if covariance_type not in EIGEN_MODELS or site not in point:
        return point
    n_features = np.shape(point["means"])[-1] if "means" in point else None
    names = [name for name in eigen_sites(covariance_type, n_features)[:3] if name is not None]
    if all(name in point for name in names):
        return point
    values = latent_values(np.asarray(point[site]), covariance_type)
    return {**{name: value for name, value in values.items() if name not in point}, **point}


def with_proportions(point: Mapping) -> dict:
    """``point`` with the background's ``proportions`` (K + 1,) added where absent: its
    ``weights`` (K,) followed by its ``background_weight`` (a new dict).

    Example:
        >>> import numpy as np
        >>> point = {"weights": np.array([0.6, 0.3]), "background_weight": np.array(0.1)}
        >>> with_proportions(point)["proportions"].tolist()
        [0.6, 0.3, 0.1]
    """
    point = dict(point)
    if "background_weight" in point and "weights" in point and "proportions" not in point:
        weights = np.asarray(point["weights"])
        background = np.asarray(point["background_weight"], weights.dtype)
        point["proportions"] = np.concatenate([weights, background[..., None]], axis=-1)
    return point


def _em_answer(x, covariance_type, seed, kwargs) -> dict | None:
    """The EM answer under the program's prior, or None (with a warning if EM fails).

    A constrained model starts from EM under its storage layout's default conjugate
    prior (EM knows no prior on volumes, shapes or orientations), its latent sites read
    off the fitted covariances (:func:`with_latent_values`). Missing entries and
    measurement errors are EM's too (``nan_policy``, ``measurement_covariances``); a
    background of one density is fitted by EM where EM takes it with the rest of the
    data's imperfections, else the chains start from the mixture's EM without it and a
    background weight of 0.1."""
    from gaussmix.inference import em

    priors = kwargs.get("priors")
    log_density = kwargs.get("background_log_density")
    if log_density is not None and priors:
        priors = {name: value for name, value in priors.items() if name != "proportions"}
    constrained = canonical_covariance_type(covariance_type) in EIGEN_MODELS
    arguments = {
        "n_components": kwargs["n_components"],
        "covariance_type": covariance_type,
        "priors": priors if priors and not constrained else "default",
        "sample_weight": kwargs.get("sample_weight"),
        "seed": seed,
        "nan_policy": kwargs.get("nan_policy", "raise"),
        "measurement_covariances": kwargs.get("measurement_covariances"),
    }
    result = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            if log_density is not None and np.ndim(log_density) == 0:
                with contextlib.suppress(NotImplementedError, ValueError):
                    result = em.fit_em(x, **arguments, background_log_density=float(log_density))
            if result is None:
                result = em.fit_em(x, **arguments)
    except ValueError as error:
        warnings.warn(
            f"EM could not provide the starting point ({error}); starting from the generic "
            "MAP search instead.",
            SamplingWarning,
            stacklevel=5,  # past sample: its caller's caller (e.g. the user of sample_mixture)
        )
        return None
    params = {name: np.asarray(value) for name, value in result.params.items()}
    if not all(bool(np.all(np.isfinite(value))) for value in params.values()):
        return None
    if log_density is not None:
        fitted = getattr(result, "background_weight", None)
        weight = 0.1 if fitted is None else float(fitted)
        weight = min(max(weight, 1e-3), 0.5)  # inside the simplex: a finite potential
        params["weights"] = (1 - weight) * params["weights"] / np.sum(params["weights"])
        params["background_weight"] = np.asarray(weight, params["weights"].dtype)
    return with_proportions(with_latent_values(params, covariance_type))


def mixture_dims(samples: Mapping, observed: tuple, sample_ndim: int = 2) -> dict:
    """Dimension names of the mixture sites.

    Args:
        samples: site -> values with ``sample_ndim`` leading sample axes.
        observed: observed sites (named ``data``, ``features``).
        sample_ndim: number of leading sample axes (2: chain, draw).

    Returns:
        site -> names of its dimensions after the sample axes.

    Example:
        >>> import numpy as np
        >>> mixture_dims({"weights": np.ones(2), "variances": np.ones((2, 3))}, (), 0)
        {'weights': ['components'], 'variances': ['components', 'features']}
    """
    dims = {}
    for name, value in samples.items():
        event_ndim = np.ndim(value) - sample_ndim
        if name == "weights":
            dims[name] = ["components"]
        elif name == "proportions":
            dims[name] = ["components_and_background"]
        elif name == "background_weight":
            dims[name] = []
        elif name == "means":
            dims[name] = ["components", "features"]
        elif name == "covariances":
            dims[name] = ["components", "feature_row", "feature_column"]
        elif name == "covariance":
            dims[name] = ["feature_row", "feature_column"]
        elif name in ("variances", "scales"):
            dims[name] = ["components"] + (["features"] if event_ndim == 2 else [])
        elif name == "volumes":
            dims[name] = ["components"]
        elif name in ("log_shapes", "shapes"):
            dims[name] = ["components", "features"]
        elif name in ("log_shape", "shape"):
            dims[name] = ["features"]
        elif name == "orientation_bases":
            dims[name] = ["components", "orientation_axis", "features"]
        elif name == "orientation_basis":
            dims[name] = ["orientation_axis", "features"]
        elif name == "volume":
            dims[name] = []
    for name in observed:
        dims[name] = ["data", "features"]
    return dims


def relabel_mixture_draws(
    samples: Mapping,
    reference: Mapping,
    covariance_type: str,
    keep_reference_labels: bool = False,
) -> tuple[dict, dict, str, float]:
    """Relabel the draws to the reference labelling.

    In one dimension the draws are ordered by their means; the reference is sorted too,
    unless ``keep_reference_labels`` (a user's ``init``), in which case the ordered
    components take the labels of the reference's components of the same rank. In more
    dimensions each draw is matched to the reference
    (:func:`gaussmix.inference.relabel.relabel_mixture`, ``method="match"``).

    With a background (sites ``proportions``, ``background_weight``) only the K Gaussian
    components are permuted: ``proportions`` is rebuilt from the relabeled ``weights``
    and the background's weight, which keeps its place.

    Args:
        samples: site -> (C, S, ...) draws.
        reference: site -> values of the reference point.
        covariance_type: of the program.
        keep_reference_labels: keep the reference's labels in one dimension.

    Returns:
        ``(relabeled draws, reference, method, label-switching fraction)``.
    """
    one_dimensional = np.shape(samples["means"])[-1] == 1
    # NumPy throughout: nothing is compiled for the relabeling (K <= 6)
    samples = {name: np.asarray(value) for name, value in samples.items()}
    reference = {name: np.asarray(value) for name, value in reference.items()}
    if not one_dimensional:
        relabeled, permutation = relabel_mixture(
            samples, reference, covariance_type, method="match"
        )
    else:
        permutation = relabeling_permutation(samples, None, covariance_type, method="order")
        if keep_reference_labels:
            # Label k gets the draw's component whose mean has the rank of reference k's.
            rank = np.argsort(np.argsort(np.asarray(reference["means"])[:, 0], kind="stable"))
            permutation = permutation[..., rank]
        else:
            reference = sort_components(reference, covariance_type)
        relabeled = apply_permutation(samples, permutation, covariance_type)
    relabeled = {name: np.asarray(value) for name, value in relabeled.items()}
    # the background is no component: it keeps its place, the last proportion
    for point in (relabeled, reference):
        if "proportions" in point:
            del point["proportions"]
            point.update(with_proportions(point))
    return (
        relabeled,
        reference,
        "order" if one_dimensional else "match",
        label_switching_fraction(permutation),
    )


register_sampling_hooks(gaussian_mixture, mixture_sampling_hooks)


def imperfect_data_arguments(x, nan_policy, measurement_covariances, background_volume) -> dict:
    """The program's keyword arguments for missing entries, errors and a background, as
    arrays of ``x``'s dtype (traced: data of the same shapes reuses the compiled
    programs); the pattern table is found here, on the host.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, np.nan], [2.0, 3.0], [0.5, 1.0]])
        >>> arguments = imperfect_data_arguments(x, "marginalize", None, 20.0)
        >>> sorted(arguments), arguments["missing_patterns"].index.tolist()
        (['background_log_density', 'missing_patterns', 'nan_policy'], [0, 1, 1])
    """
    arguments: dict = {}
    if nan_policy not in ("raise", "marginalize"):
        raise ValueError(
            f"Invalid nan_policy {nan_policy!r}; choose 'raise' or 'marginalize' (drop "
            "the rows with NaN yourself to omit them)."
        )
    data = np.asarray(x)
    dtype = data.dtype if np.issubdtype(data.dtype, np.floating) else np.dtype(float)
    data = data.reshape((-1, 1)) if data.ndim == 1 else data
    if nan_policy == "marginalize":
        arguments["nan_policy"] = nan_policy
        if data.ndim == 2 and np.any(np.isnan(data)):
            arguments["missing_patterns"] = find_missing_patterns(data)
    if measurement_covariances is not None:
        errors = np.asarray(measurement_covariances)
        check_measurement_covariances(errors, data.shape, ~np.isnan(data))
        arguments["measurement_covariances"] = errors.astype(dtype)
    if background_volume is not None:
        volume = np.asarray(background_volume, np.float64)
        if volume.shape not in ((), (data.shape[0],)) or not np.all(
            np.isfinite(volume) & (volume > 0)
        ):
            raise ValueError(
                f"background_volume must be a finite volume > 0 (or one per row, shape "
                f"({data.shape[0]},)); got shape {volume.shape}"
                + (f", values from {volume.min():.3g}" if volume.size else "")
                + ". By default GaussianMixture uses the data's bounding box."
            )
        arguments["background_log_density"] = np.asarray(-np.log(volume), dtype)
    return arguments


#: Elements of the (draws, K, D, N) projections formed at once by
#: :func:`_mean_responsibilities` (float64: 32 MiB).
_RESPONSIBILITY_CHUNK = 4_000_000


def _mean_responsibilities(x, weights, means, covariance, layout):
    """Posterior mean responsibilities of complete data, in NumPy (float64), draws by chunks.

    Nothing is compiled: after the NUTS programs this was the first ``sample_posterior``'s
    fourth program (0.4-0.5 s of XLA's compile time on a 2-core CPU for 300 points), for
    an accumulation that NumPy does at the same arithmetic cost. Per draw,
    :math:`\\log \\pi_k + \\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k)` through the
    inverse Cholesky factor :math:`L_k^{-1}` (full, tied) or the variances (diag,
    spherical), then a softmax over k.

    Args:
        x: (N, D) data.
        weights: (S, K) draws.
        means: (S, K, D) draws.
        covariance: (S, K, D, D) full, (S, D, D) tied, (S, K, D) diag, (S, K) spherical.
        layout: "full", "tied", "diag" or "spherical".

    Returns:
        (N, K) float64, rows summing to one.

    Raises:
        ValueError: a draw with NaN, or a covariance that is not positive definite.
    """
    x = np.asarray(x, np.float64)
    weights = np.asarray(weights, np.float64)
    means = np.asarray(means, np.float64)
    covariance = np.asarray(covariance, np.float64)
    (n_samples, n_features), n_components = x.shape, weights.shape[-1]
    constant = 0.5 * n_features * np.log(2.0 * np.pi)
    total = np.zeros((n_samples, n_components))
    chunk = max(1, _RESPONSIBILITY_CHUNK // (n_components * n_features * n_samples))
    for start in range(0, weights.shape[0], chunk):
        part = slice(start, start + chunk)
        mean = means[part]  # (s, K, D)
        if layout in ("full", "tied"):
            matrix = covariance[part]
            if layout == "tied":
                matrix = np.broadcast_to(matrix[:, None], (*mean.shape, n_features))
            try:
                cholesky = np.linalg.cholesky(matrix)
            except np.linalg.LinAlgError:
                cholesky = np.full_like(matrix, np.nan)  # refused below
            inverse = np.linalg.inv(cholesky)  # (s, K, D, D), lower triangular
            projected = inverse @ x.T - (inverse @ mean[..., None])  # (s, K, D, N)
            squared = np.sum(projected**2, axis=-2)
            log_determinant = np.sum(np.log(np.diagonal(cholesky, axis1=-2, axis2=-1)), -1)
        else:
            variances = covariance[part]
            if layout == "spherical":
                variances = np.broadcast_to(variances[..., None], mean.shape)
            deviation = x.T[None, None] - mean[..., None]  # (s, K, D, N)
            with np.errstate(divide="ignore", invalid="ignore"):  # a variance <= 0: refused below
                squared = np.sum(deviation**2 / variances[..., None], axis=-2)
                log_determinant = 0.5 * np.sum(np.log(variances), axis=-1)
        # a weight of 0 is a log density of -inf; NaN from a bad draw is refused below
        with np.errstate(divide="ignore", invalid="ignore"):
            log_prob = np.log(weights[part])[..., None] - 0.5 * squared
            log_prob -= (log_determinant + constant)[..., None]  # (s, K, N)
            log_prob -= np.max(log_prob, axis=1, keepdims=True)
            joint = np.exp(log_prob)
            total += np.sum(joint / np.sum(joint, axis=1, keepdims=True), axis=0).T
    if not np.all(np.isfinite(total)):
        raise ValueError(
            "The posterior mean responsibilities are not finite: a posterior draw has a "
            "non-finite weight or mean, or a covariance that is not positive definite; "
            "check the draws (tree.posterior) for NaN or singular covariances."
        )
    return total / weights.shape[0]


def _imperfect_responsibilities_impl(x, draws, data, covariance_type):
    """Mean responsibilities on imperfect data: (N, K), or (N, K + 1) with a background
    (its column last)."""

    def add(total, draw):
        log_prob = imperfect_component_log_density(
            x,
            draw["means"],
            draw["covariance"],
            covariance_type,
            patterns=data["patterns"],
            measurement_covariances=data["measurement_covariances"],
        ).T + jnp.log(draw["weights"])
        if "background_weight" in draw:
            background = jnp.log(draw["background_weight"]) + jnp.broadcast_to(
                data["background_log_density"], x.shape[:1]
            )
            log_prob = jnp.concatenate([log_prob, background[:, None]], axis=-1)
        return total + jax.nn.softmax(log_prob, axis=-1), None

    width = draws["weights"].shape[-1] + ("background_weight" in draws)
    total, _ = lax.scan(add, jnp.zeros((x.shape[0], width), x.dtype), draws)
    return total / draws["weights"].shape[0]


_mean_imperfect_responsibilities = compilation.jit(
    _imperfect_responsibilities_impl, static_argnames=("covariance_type",)
)


def posterior_responsibilities(
    x: ArrayLike,
    tree,
    covariance_type: str,
    *,
    imperfect_data: Mapping[str, Any] | None = None,
) -> jax.Array:
    """Posterior mean of the responsibilities, accumulated draw by draw.

    .. math::

        \\bar r_{nk} = \\frac{1}{S}\\sum_{s=1}^{S}
            \\frac{\\pi^{(s)}_k \\mathcal{N}(x_n \\mid \\mu^{(s)}_k, \\Sigma^{(s)}_k)}
                 {\\sum_j \\pi^{(s)}_j \\mathcal{N}(x_n \\mid \\mu^{(s)}_j, \\Sigma^{(s)}_j)}

    Args:
        x: (N, D) or (N,) data.
        tree: DataTree of the mixture posterior (relabeled).
        covariance_type: of the program.
        imperfect_data: the program's ``missing_patterns``, ``measurement_covariances``
            and ``background_log_density`` (``x`` may then hold NaN): the densities are
            the rows' marginal ones (:mod:`gaussmix.models.imperfect_data`).

    Returns:
        (N, K), rows summing to one; (N, K + 1) with a background, its column last.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    site = COVARIANCE_SITES[covariance_type]
    if imperfect_data is None:  # in NumPy, nothing compiled
        posterior = tree.posterior
        mean = _mean_responsibilities(
            x,
            *(
                np.asarray(posterior[name].values).reshape((-1, *posterior[name].shape[2:]))
                for name in ("weights", "means", site)
            ),
            COVARIANCE_LAYOUTS[covariance_type],
        )
        return jax.device_put(mean.astype(x.dtype))
    # Reshaped and cast in NumPy, then moved: no small programs compiled on the way.
    x = jax.device_put(x)
    values = {
        name: jax.device_put(
            np.asarray(tree.posterior[name].values, x.dtype).reshape(
                (-1, *tree.posterior[name].shape[2:])
            )
        )
        for name in ("weights", "means", site, "background_weight")
        if name in tree.posterior
    }
    draws = {name: values[name] for name in values if name != site}
    draws["covariance"] = values[site]
    data = {
        name: imperfect_data.get(name)
        for name in ("missing_patterns", "measurement_covariances", "background_log_density")
    }
    data["patterns"] = data.pop("missing_patterns")
    return _mean_imperfect_responsibilities(x, draws, data, covariance_type)


def sample_mixture(
    x: ArrayLike,
    *,
    n_components: int,
    covariance_type: str = "full",
    priors: Mapping[str, Any] | None = None,
    sample_weight: ArrayLike | None = None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int | jax.Array = 0,
    progress_bar: bool | None = None,
    init: Mapping[str, ArrayLike] | None = None,
    prior_parameters=None,
    posterior_predictive: bool = False,
    nan_policy: str = "raise",
    measurement_covariances: ArrayLike | None = None,
    background_volume: ArrayLike | None = None,
):
    """NUTS on :func:`gaussmix.models.gaussian_mixture`: relabeled draws, responsibilities.

    Runs :func:`~gaussmix.inference.mcmc.sample` (chains from ``init``, else the EM
    answer under the program's prior), relabels the draws to the labelling of that point
    (ordered by the means in one dimension, ascending after EM, in ``init``'s rank order
    after ``init``) and adds the group ``mixture`` with

    .. math::

        \\bar r_{nk} = \\frac{1}{S}\\sum_{s=1}^{S}
            \\frac{\\pi^{(s)}_k \\mathcal{N}(x_n \\mid \\mu^{(s)}_k, \\Sigma^{(s)}_k)}
                 {\\sum_j \\pi^{(s)}_j \\mathcal{N}(x_n \\mid \\mu^{(s)}_j, \\Sigma^{(s)}_j)},

    the posterior-averaged responsibilities ``responsibilities`` (data, components), and
    the reference point of the labelling as ``reference_<site>``.

    Args:
        x: (N, D) or (N,) data.
        n_components, covariance_type, priors, sample_weight, prior_parameters: as in
            :func:`gaussmix.models.gaussian_mixture`.
        num_warmup, num_samples, num_chains, seed, progress_bar, init, posterior_predictive:
            as in :func:`~gaussmix.inference.mcmc.sample`.
        nan_policy: "raise" or "marginalize" (NaN entries are missing; each row's
            likelihood is the marginal density of its observed coordinates).
        measurement_covariances: (N, D, D) or (N, D) per-row measurement error
            (co)variances (extreme deconvolution; the sites describe the error-free
            mixture).
        background_volume: V > 0 of a uniform background (noise) component of density
            1/V, or (N,) volumes, one per row (e.g. of its observed coordinates' box);
            its weight is the last of the ``proportions`` site and ``background_weight``.
            The background keeps its place under relabeling.

    Missing entries, measurement errors and a background make the observed site score
    each row by its marginal density (:mod:`gaussmix.models.imperfect_data`), which is
    also the pointwise ``log_likelihood`` LOO reads. Posterior predictive draws are
    not available then.

    Returns:
        The DataTree of :func:`~gaussmix.inference.mcmc.sample` plus the group
        ``mixture`` (with a background, ``responsibilities`` has K + 1 columns on the
        dimension ``components_and_background``, the background's last).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(-3, 1, 100), rng.normal(3, 1, 100)])
        >>> tree = sample_mixture(x, n_components=2, covariance_type="spherical",
        ...                       num_warmup=300, num_samples=300, num_chains=2,
        ...                       progress_bar=False)
        >>> np.round(tree.posterior["means"].mean(("chain", "draw")).values.ravel()).tolist()
        [-3.0, 3.0]
        >>> tree["mixture"]["responsibilities"].shape
        (200, 2)
    """
    check_covariance_type(covariance_type)
    kwargs = {"n_components": n_components, "covariance_type": covariance_type}
    if priors is not None:
        kwargs["priors"] = priors
    if sample_weight is not None:
        kwargs["sample_weight"] = sample_weight
    if prior_parameters is not None:
        kwargs["prior_parameters"] = prior_parameters
    imperfect = imperfect_data_arguments(x, nan_policy, measurement_covariances, background_volume)
    if imperfect and posterior_predictive:
        raise ValueError(
            "posterior_predictive draws are not available with missing entries, "
            "measurement errors or a background (the program scores those rows, it does "
            "not simulate them); pass posterior_predictive=False, and draw new points from "
            "the posterior's parameters (e.g. GaussianMixture.sample)."
        )
    kwargs.update(imperfect)
    if isinstance(init, Mapping):
        init = with_proportions(with_latent_values(init, covariance_type))
    tree = sample(
        gaussian_mixture,
        x,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        init=init,
        progress_bar=progress_bar,
        posterior_predictive=posterior_predictive,
        **kwargs,
    )
    responsibilities = posterior_responsibilities(
        tree.observed_data["x"].values,
        tree,
        covariance_type,
        imperfect_data=imperfect or None,
    )
    import xarray as xr

    group = tree["mixture"].to_dataset() if "mixture" in tree.children else xr.Dataset()
    background = "background_log_density" in imperfect
    group["responsibilities"] = xr.DataArray(
        np.asarray(responsibilities),
        dims=("data", "components_and_background" if background else "components"),
        attrs={"description": "posterior mean of p(z_n = k | x_n, theta) over the draws"},
    )
    tree["mixture"] = group
    return tree

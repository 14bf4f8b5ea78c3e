"""Model comparison by PSIS-LOO, and point estimates side by side with the posterior.

:func:`compare` ranks fitted models by their expected log pointwise predictive density

.. math::

    \\widehat{\\mathrm{elpd}}_{\\mathrm{loo}} = \\sum_{n=1}^{N}
        \\log \\frac{\\sum_s w_n^{(s)} p(y_n \\mid \\theta^{(s)})}{\\sum_s w_n^{(s)}},

with Pareto-smoothed importance weights :math:`w_n^{(s)}` (ArviZ's ``compare``; there is
no WAIC in ArviZ 1.x). :func:`point_versus_posterior` puts a point estimate (EM, MAP,
scikit-learn) next to posterior means, standard deviations and equal-tailed intervals,
after putting the point's mixture components in the posterior's labelling.

Both functions are public as ``gaussmix.compare`` and ``gaussmix.point_versus_posterior``.
"""

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["compare", "point_versus_posterior"]


def compare(
    trees: Mapping[str, object],
    *,
    method: str = "stacking",
    var_name: str | None = None,
    reference: str | None = None,
):
    """The ArviZ LOO comparison table of several fitted models.

    Args:
        trees: ``{name: DataTree}``, each with a ``log_likelihood`` group (as returned by
            :func:`gaussmix.inference.sample`), all for the same observations; at least two.
        method: model weights, "stacking", "BB-pseudo-BMA" or "pseudo-BMA".
        var_name: the observed variable to compare on, when there are several.
        reference: the model ``elpd_diff`` is taken against (default: the best).

    Returns:
        ``pandas.DataFrame`` indexed by model name, best first, with columns ``rank``,
        ``elpd``, ``se``, ``p``, ``elpd_diff`` (negative for worse models), ``dse``,
        ``weight`` and ArviZ's diagnostics of the differences (``p_worse``,
        ``diag_diff``, ``diag_elpd``).

    Raises:
        ValueError: fewer than two models, or a model without pointwise log-likelihoods.

    Example:
        >>> import numpy as np
        >>> from arviz_base import from_dict
        >>> rng = np.random.default_rng(0)
        >>> def tree(shift):
        ...     return from_dict({"posterior": {"mu": rng.normal(size=(2, 200))},
        ...                       "log_likelihood": {"y": rng.normal(-1 - shift, 0.1, (2, 200, 30))}})
        >>> table = compare({"good": tree(0.0), "worse": tree(0.5)})
        >>> table.index.tolist()
        ['good', 'worse']
    """
    import arviz_stats

    if not isinstance(trees, Mapping) or len(trees) < 2:
        raise ValueError("compare needs a dict {name: DataTree} of at least two fitted models.")
    for name, tree in trees.items():
        children = getattr(tree, "children", {})
        if "log_likelihood" not in children:
            raise ValueError(
                f"Model {name!r} has no log_likelihood group; sample it with "
                "gaussmix.inference.sample (which stores the pointwise log-likelihood)."
            )
    return arviz_stats.compare(
        dict(trees), method=method, var_name=var_name, reference=reference, round_to="none"
    )


def _covariance_type(point: Mapping) -> str | None:
    if "covariances" in point:
        return "full"
    if "covariance" in point:
        return "tied"
    if "variances" in point:
        return "diag" if np.ndim(point["variances"]) == 2 else "spherical"
    return None


def _align_components(point: dict, posterior) -> dict:
    """Permute a mixture point's components into the labelling of the (relabeled) draws."""
    from gaussmix.inference.relabel import apply_permutation, relabel_mixture

    covariance_type = _covariance_type(point)
    means = np.asarray(point["means"], float)
    if "means" not in posterior or means.shape != posterior["means"].shape[2:]:
        return point
    if means.shape[-1] == 1:
        # One dimension: the draws are ordered by their means (ascending, or in the rank
        # order of the point they started from); give the point the same rank order.
        posterior_means = posterior["means"].mean(("chain", "draw")).values[:, 0]
        rank = np.argsort(np.argsort(posterior_means, kind="stable"), kind="stable")
        permutation = np.argsort(means[:, 0], kind="stable")[rank]
        batched = {name: np.asarray(value, float)[None] for name, value in point.items()}
        permuted = apply_permutation(batched, permutation[None], covariance_type or "full")
        return {name: np.asarray(value)[0] for name, value in permuted.items()}
    site = {"full": "covariances", "tied": "covariance"}.get(covariance_type, "variances")
    if covariance_type is None or site not in posterior:
        return point
    reference = {
        "means": posterior["means"].mean(("chain", "draw")).values,
        site: posterior[site].mean(("chain", "draw")).values,
    }
    batched = {name: np.asarray(value, float)[None] for name, value in point.items()}
    relabeled, _ = relabel_mixture(batched, reference, covariance_type, method="match")
    return {name: np.asarray(value)[0] for name, value in relabeled.items()}


def point_versus_posterior(
    point: Mapping[str, object],
    posterior,
    *,
    var_names: Sequence[str] | None = None,
    ci_prob: float = 0.94,
):
    """Point estimates next to posterior means, standard deviations and intervals.

    For a mixture (``weights`` and ``means`` in both), the point's components are first
    permuted into the labelling of the draws (ordered by the means in one dimension,
    matched to the posterior means otherwise), so that rows compare like with like.

    Args:
        point: ``{site: value}``, e.g. ``fit_em(...).params`` or a MAP.
        posterior: DataTree with a ``posterior`` group (chain, draw, ...), e.g. from
            :func:`gaussmix.inference.mcmc.sample_mixture`.
        var_names: sites to show (default: those in both).
        ci_prob: probability of the equal-tailed interval, in (0, 1).

    Returns:
        ``pandas.DataFrame`` with one row per scalar parameter (``means[0, 1]``) and
        columns ``point``, ``mean``, ``sd``, ``lower``, ``upper``, ``inside`` (the point
        lies in the interval) and ``z`` (``(point - mean) / sd``).

    Raises:
        ValueError: bad ``ci_prob``, unknown ``var_names``, or shapes that differ.

    Example:
        >>> import numpy as np
        >>> from arviz_base import from_dict
        >>> draws = np.random.default_rng(0).normal(1.0, 0.1, size=(4, 500))
        >>> table = point_versus_posterior({"mu": 1.05}, from_dict({"posterior": {"mu": draws}}))
        >>> bool(table.loc["mu", "inside"]), round(float(table.loc["mu", "mean"]), 1)
        (True, 1.0)
    """
    import pandas as pd

    if not 0.0 < ci_prob < 1.0:
        raise ValueError(f"ci_prob must lie in (0, 1), got {ci_prob}.")
    if not isinstance(point, Mapping):
        raise ValueError(f"point must be a dict {{site: value}}, got {type(point).__name__}.")
    draws = posterior["posterior"] if "posterior" in getattr(posterior, "children", {}) else None
    if draws is None:
        raise ValueError("posterior must be a DataTree with a 'posterior' group.")
    common = [name for name in point if name in draws.data_vars]
    if var_names is None:
        var_names = common
    else:
        var_names = [var_names] if isinstance(var_names, str) else list(var_names)
        unknown = sorted(set(var_names) - set(common))
        if unknown:
            raise ValueError(
                f"var_names {unknown} are not in both the point and the posterior; "
                f"common sites: {common}."
            )
    point = {name: np.asarray(value, float) for name, value in point.items()}
    if "weights" in point and "means" in point:
        point = _align_components(point, draws)
    rows, labels = [], []
    tail = (1.0 - ci_prob) / 2
    for name in var_names:
        values = draws[name].values
        flat = values.reshape(-1, *values.shape[2:])
        if point[name].shape != flat.shape[1:]:
            raise ValueError(
                f"point[{name!r}] has shape {point[name].shape}, the posterior draws "
                f"{flat.shape[1:]}."
            )
        lower, upper = np.quantile(flat, [tail, 1.0 - tail], axis=0)
        mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
        for index in np.ndindex(*flat.shape[1:]):
            labels.append(name + (f"[{', '.join(map(str, index))}]" if index else ""))
            value = point[name][index]
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (value - mean[index]) / sd[index]
            rows.append(
                {
                    "point": value,
                    "mean": mean[index],
                    "sd": sd[index],
                    "lower": lower[index],
                    "upper": upper[index],
                    "inside": bool(lower[index] <= value <= upper[index]),
                    "z": z,
                }
            )
    return pd.DataFrame(rows, index=labels)

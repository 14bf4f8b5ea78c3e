"""One-call MCMC diagnostics of an ArviZ DataTree, with warnings and a text report.

:func:`diagnose` gathers what decides whether NUTS draws can be trusted:

* rank-normalized split :math:`\\hat R` (Vehtari et al. 2021), bulk and tail effective
  sample sizes and Monte Carlo standard errors of every scalar parameter
  (``arviz_stats.summary``);
* divergent transitions and iterations that hit the maximum tree depth;
* the energy Bayesian fraction of missing information per chain,
  :math:`\\mathrm{BFMI} = \\sum_s (E_s - E_{s-1})^2 / \\sum_s (E_s - \\bar E)^2`;
* the Pareto :math:`\\hat k` of PSIS-LOO per observation (``arviz_stats.loo``);
* disagreement between chains: a parameter whose chain means differ by more than
  ``multimodality_threshold`` within-chain standard deviations (and whose
  :math:`\\hat R` fails) has chains sitting in different modes; for mixtures, whose draws
  are relabeled first, that is multimodality beyond label switching, and it is reported
  as such rather than averaged over;
* for relabeled mixtures, the fraction of draws whose components swap labels within
  their chain: overlapping components that the data cannot tell apart.

Every failed check is a :class:`SamplingWarning` and a line of
:attr:`DiagnosticsReport.problems`; the text rendering puts them before the table and
marks the estimates unreliable.
"""

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["DiagnosticsReport", "SamplingWarning", "diagnose"]


class SamplingWarning(UserWarning):
    """The draws may not represent the posterior (a diagnostic failed)."""


@dataclasses.dataclass(frozen=True)
class DiagnosticsReport:
    """Diagnostics of one MCMC run.

    Attributes:
        table: ``pandas.DataFrame``, one row per scalar parameter (e.g. ``means[0, 1]``),
            columns ``mean``, ``sd``, ``eti94_lb``, ``eti94_ub`` (94 % equal-tailed
            interval), ``ess_bulk``, ``ess_tail``, ``r_hat``, ``mcse_mean``, ``mcse_sd``.
        num_chains: C.
        num_draws: S per chain.
        divergences: divergent transitions after warmup (all chains).
        max_tree_depth_hits: iterations that reached the maximum tree depth.
        bfmi: (C,) energy BFMI per chain (empty without ``energy``).
        pareto_k: ``{observed site: (N,) Pareto k}`` of PSIS-LOO (empty without
            ``log_likelihood``).
        elpd_loo: ``{observed site: (elpd, se)}``.
        multimodal: parameters whose chains disagree beyond ``multimodality_threshold``.
        problems: one sentence per failed check; empty when all pass.
        thresholds: the thresholds used.
    """

    table: object
    num_chains: int
    num_draws: int
    divergences: int
    max_tree_depth_hits: int
    bfmi: np.ndarray
    pareto_k: dict
    elpd_loo: dict
    multimodal: tuple
    problems: tuple
    thresholds: dict

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems

    def to_text(self) -> str:
        """Plain-text rendering: verdict and problems first, then the table."""
        lines = [
            f"NUTS: {self.num_chains} chains x {self.num_draws} draws; "
            f"{self.divergences} divergences; "
            + (f"min BFMI {np.min(self.bfmi):.2f}; " if np.size(self.bfmi) else "")
            + "; ".join(
                f"max Pareto k ({name}) {np.max(k):.2f}" for name, k in self.pareto_k.items()
            )
        ]
        if self.problems:
            lines.append("")
            lines.append(
                "WARNING: the draws failed the diagnostics below; the estimates in the table "
                "are NOT reliable and must not be reported as the posterior."
            )
            lines.extend(f"  - {problem}" for problem in self.problems)
            lines.append("")
            lines.append("Unreliable estimates:")
        else:
            lines.append(
                "All diagnostics pass (R-hat <= {rhat}, ESS >= {ess}, no divergences, "
                "Pareto k <= {k}).".format(**self.thresholds)
            )
        with _wide_pandas():
            lines.append(self.table.to_string(float_format=lambda value: f"{value:.4g}"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


class _wide_pandas:
    def __enter__(self):
        import pandas as pd

        self._context = pd.option_context("display.width", 200, "display.max_columns", 20)
        self._context.__enter__()

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def _chain_disagreement(posterior, var_names) -> dict:
    """Largest gap between chain means in pooled within-chain SDs, per scalar parameter."""
    gaps = {}
    for name in var_names:
        values = np.asarray(posterior[name].values, float)
        if values.shape[0] < 2:
            continue
        flat = values.reshape(values.shape[0], values.shape[1], -1)
        chain_means = flat.mean(axis=1)
        within = np.sqrt(np.mean(flat.var(axis=1, ddof=1), axis=0))
        spread = chain_means.max(axis=0) - chain_means.min(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.where(within > 0, spread / within, np.where(spread > 0, np.inf, 0.0))
        index = np.ndindex(*values.shape[2:]) if values.ndim > 2 else [()]
        for position, value in zip(index, gap, strict=True):
            label = name + (f"[{', '.join(map(str, position))}]" if position else "")
            gaps[label] = float(value)
    return gaps


def diagnose(
    tree,
    *,
    var_names: Sequence[str] | None = None,
    rhat_threshold: float = 1.01,
    ess_threshold: float = 400,
    pareto_k_threshold: float = 0.7,
    bfmi_threshold: float = 0.3,
    multimodality_threshold: float = 3.0,
    label_switching_threshold: float = 0.05,
    warn: bool = True,
) -> DiagnosticsReport:
    """Diagnose an MCMC DataTree in one call.

    Args:
        tree: DataTree with ``posterior`` (chain, draw, ...) and, when available,
            ``sample_stats`` (``diverging``, ``energy``, ``reached_max_tree_depth``) and
            ``log_likelihood`` (e.g. from :func:`gaussmix.inference.sample`).
        var_names: posterior variables to check (default: all).
        rhat_threshold: R-hat above this fails (1.01).
        ess_threshold: bulk or tail ESS below this fails (400).
        pareto_k_threshold: Pareto k above this fails (0.7).
        bfmi_threshold: a chain with BFMI below this fails (0.3).
        multimodality_threshold: chain means further apart than this many within-chain
            SDs, with R-hat failing, report separate modes (3).
        label_switching_threshold: for relabeled mixtures (``posterior.attrs
            ["label_switching"]``), a larger fraction of draws that swap labels within
            their chain fails (0.05).
        warn: issue one :class:`SamplingWarning` per failed check.

    Returns:
        :class:`DiagnosticsReport`; ``str(report)`` is the text rendering.

    Raises:
        ValueError: ``tree`` has no posterior group or unknown ``var_names``.

    Example:
        >>> import numpy as np
        >>> from arviz_base import from_dict
        >>> rng = np.random.default_rng(0)
        >>> tree = from_dict({"posterior": {"mu": rng.normal(size=(4, 1000))}})
        >>> report = diagnose(tree)
        >>> report.ok, bool(report.table.loc["mu", "r_hat"] < 1.01)
        (True, True)
    """
    import arviz_stats

    if "posterior" not in getattr(tree, "children", {}):
        raise ValueError("tree must be an ArviZ DataTree with a 'posterior' group.")
    posterior = tree["posterior"]
    available = list(posterior.data_vars)
    if var_names is None:
        var_names = available
    else:
        var_names = [var_names] if isinstance(var_names, str) else list(var_names)
        unknown = sorted(set(var_names) - set(available))
        if unknown:
            raise ValueError(f"Unknown var_names {unknown}; the posterior holds {available}.")
    num_chains, num_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    thresholds = {
        "rhat": rhat_threshold,
        "ess": ess_threshold,
        "k": pareto_k_threshold,
        "bfmi": bfmi_threshold,
        "multimodality": multimodality_threshold,
        "label_switching": label_switching_threshold,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = arviz_stats.summary(
            tree, var_names=var_names, round_to="none", ci_kind="eti", ci_prob=0.94
        )
    problems = []

    # Convergence of every scalar parameter (constant ones have no R-hat: skipped).
    r_hat = table["r_hat"].astype(float)
    high = r_hat[r_hat > rhat_threshold] if num_chains > 1 else r_hat.iloc[:0]
    if len(high):
        problems.append(
            f"R-hat > {rhat_threshold} for {len(high)} parameter(s) "
            f"(worst {high.idxmax()}: {high.max():.3f}): the chains disagree."
        )
    ess = table[["ess_bulk", "ess_tail"]].astype(float).min(axis=1)
    low = ess[ess < ess_threshold]
    if len(low):
        problems.append(
            f"ESS < {ess_threshold:g} for {len(low)} parameter(s) (lowest {low.idxmin()}: "
            f"{low.min():.0f}): run longer chains or improve the parameterization."
        )
    gaps = _chain_disagreement(posterior, var_names)
    multimodal = tuple(
        label
        for label, gap in gaps.items()
        if gap > multimodality_threshold and label in high.index
    )
    if multimodal:
        worst = max(multimodal, key=gaps.get)
        problems.append(
            f"Chains sit in different modes: chain means of {len(multimodal)} parameter(s) "
            f"differ by up to {gaps[worst]:.1f} within-chain SDs ({worst}). The posterior "
            "is multimodal beyond label switching (or chains are stuck); do not summarize "
            "it by one mean."
        )

    switching = posterior.attrs.get("label_switching")
    if switching is not None and switching > label_switching_threshold:
        problems.append(
            f"Components swap labels within chains in {100 * switching:.0f} % of the draws: "
            "they overlap so much that the data do not tell them apart, and per-component "
            "estimates depend on the relabeling convention. Consider fewer components."
        )

    # Sampler statistics.
    divergences = hits = 0
    bfmi = np.array([])
    if "sample_stats" in tree.children:
        stats = tree["sample_stats"]
        if "diverging" in stats:
            divergences = int(np.sum(stats["diverging"].values))
        if "reached_max_tree_depth" in stats:
            hits = int(np.sum(stats["reached_max_tree_depth"].values))
        if "energy" in stats:
            bfmi = np.atleast_1d(np.asarray(arviz_stats.bfmi(tree)["energy"].values, float))
    if divergences:
        problems.append(
            f"{divergences} of {num_chains * num_draws} transitions diverged: parts of the "
            "posterior were not explored; raise target_accept_prob or reparameterize."
        )
    if hits:
        problems.append(
            f"{hits} iterations reached the maximum tree depth: sampling is inefficient; "
            "raise max_tree_depth or reparameterize."
        )
    if np.size(bfmi) and np.any(bfmi < bfmi_threshold):
        problems.append(
            f"BFMI < {bfmi_threshold} in {int(np.sum(bfmi < bfmi_threshold))} chain(s) "
            f"(lowest {np.min(bfmi):.2f}): momentum resampling explores the energy poorly."
        )

    # PSIS-LOO.
    pareto_k, elpd = {}, {}
    if "log_likelihood" in tree.children:
        for name in tree["log_likelihood"].data_vars:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = arviz_stats.loo(tree, pointwise=True, var_name=name)
            pareto_k[name] = np.asarray(result.pareto_k.values, float).ravel()
            elpd[name] = (float(result.elpd), float(result.se))
            bad = int(np.sum(pareto_k[name] > pareto_k_threshold))
            if bad:
                problems.append(
                    f"Pareto k > {pareto_k_threshold} for {bad} of {pareto_k[name].size} "
                    f"observations of {name!r} (max {np.max(pareto_k[name]):.2f}): PSIS-LOO is "
                    "unreliable for them (influential points or a misspecified model)."
                )
    if warn:
        for problem in problems:
            warnings.warn(problem, SamplingWarning, stacklevel=2)
    return DiagnosticsReport(
        table=table,
        num_chains=num_chains,
        num_draws=num_draws,
        divergences=divergences,
        max_tree_depth_hits=hits,
        bfmi=bfmi,
        pareto_k=pareto_k,
        elpd_loo=elpd,
        multimodal=multimodal,
        problems=tuple(problems),
        thresholds=thresholds,
    )

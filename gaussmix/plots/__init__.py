"""Figures for mixtures, k-means, peak fits, model selection and posteriors.

Every function draws on the matplotlib Axes given as ``ax`` (a new figure when it is
``None``) and returns that Axes; the multi-panel MCMC plots (:func:`plot_trace`,
:func:`plot_rank`) take ``axes``, one per panel, and return them. No function calls
``plt.show()``; matplotlib is imported only when one is called, so ``import gaussmix``
stays free of matplotlib. Arrays may be NumPy or JAX arrays.

The :math:`n`-sigma ellipse of a component is its Mahalanobis contour of radius
:math:`n`,

.. math::

    \\{x : (x - \\mu_k)^\\top \\Sigma_k^{-1} (x - \\mu_k) = n^2\\}
    = \\{\\mu_k + n L_k u : \\lVert u \\rVert = 1\\},\\qquad L_k L_k^\\top = \\Sigma_k,

drawn in the plane of two chosen features (the marginal covariance of those two).

The figures live in modules by concern: :mod:`~gaussmix.plots.mixture` (ellipses,
mixtures, posterior ellipses, k-means, densities), :mod:`~gaussmix.plots.peaks`,
:mod:`~gaussmix.plots.selection` (information criteria), :mod:`~gaussmix.plots.images`,
:mod:`~gaussmix.plots.diagnostics` (trace, rank and forest plots) and the shared
:mod:`~gaussmix.plots.style`; every public name is available here.
"""

from gaussmix.plots.diagnostics import plot_forest, plot_rank, plot_trace, rank_histograms
from gaussmix.plots.images import plot_image_grid
from gaussmix.plots.mixture import (
    covariance_matrices,
    plot_density,
    plot_ellipses,
    plot_kmeans,
    plot_mixture,
    plot_posterior_ellipses,
)
from gaussmix.plots.peaks import plot_peaks
from gaussmix.plots.selection import plot_criterion_table, plot_information_criteria

__all__ = [
    "covariance_matrices",
    "plot_criterion_table",
    "plot_density",
    "plot_ellipses",
    "plot_forest",
    "plot_image_grid",
    "plot_information_criteria",
    "plot_kmeans",
    "plot_mixture",
    "plot_peaks",
    "plot_posterior_ellipses",
    "plot_rank",
    "plot_trace",
    "rank_histograms",
]

"""Out-of-core EM for the Gaussian mixture: exact EM over chunks and online EM.

Data that does not fit in memory is read in row chunks: an ``np.memmap``, a ``.npy``
path (opened with ``np.load(mmap_mode="r")``), an iterable of chunks or a callable that
returns a fresh iterator of chunks. Each chunk is an (n, D) array, an ``(x, w)`` tuple
with its (n,) sample weights, or an ``(x, w, s)`` tuple adding its rows' (n, D, D) or
(n, D) measurement covariances (extreme deconvolution: each chunk's statistics are those
of :func:`gaussmix.inference.em.deconvolution.block_statistics`; array data takes them as
an (N, ...) array, memmap or ``.npy`` path alongside).

Exact EM (:func:`fit_em_chunked`). The E-step statistics of
:func:`gaussmix.inference.em.sufficient_statistics` are sums over points, so one EM
iteration is one pass over the chunks: one jitted statistics function per chunk shape
(chunks are padded with zero-weight rows to one shape), the statistics added on the host
in float64, then the M-step of :mod:`gaussmix.inference.em`:

.. math::

    S^{(t)} = \\sum_{c} \\hat S_c(\\theta^{(t)}),\\qquad
    \\theta^{(t+1)} = \\operatorname{M-step}(S^{(t)}),

which is the in-memory EM of :func:`gaussmix.inference.em.fit_em` up to the order of
the floating-point sums (equal to 1e-10 in float64). A first pass finds the weighted mean
(the centre of the moments), the moments of the default prior (MAP) and a uniform sample
of at most ``init_rows`` rows on which the initialization runs
(:func:`gaussmix.inference.em.initialize`); with at most ``init_rows`` rows the sample is the whole data in order and
the fit equals ``fit_em``'s, initialization included. Under ``jax.distributed`` each
process passes its own rows and the statistics are summed across processes, so every
process reaches the same answer.

Online EM (:func:`fit_em_online`, :func:`online_em_step`), Cappé and Moulines (2009):
the statistics per unit weight are a running average with a decreasing step size

.. math::

    s_t = (1 - \\rho_t)\\, s_{t-1} + \\rho_t\\, \\hat s(x_{(t)}; \\theta_{t-1}),\\qquad
    \\rho_t = (t + \\tau_0)^{-\\kappa},\\quad \\kappa \\in (0.5, 1],

and :math:`\\theta_t` is the M-step of :math:`W_t s_t` (:math:`W_t` the weight seen so
far), one pass over the data. The start is EM on the first chunk. Continuing a fit
(:func:`online_em_continue`), the fitted data's statistics start the average with its
weight :math:`W_0` and each chunk enters by its share, :math:`\\rho_t = w_t / W_t`
(incremental EM).

The package is split by concern: :mod:`~gaussmix.inference.streaming.chunks` (chunk
sources), :mod:`~gaussmix.inference.streaming.processes` (sums across processes),
:mod:`~gaussmix.inference.streaming.survey` (the first pass and the initialization),
:mod:`~gaussmix.inference.streaming.exact` (exact EM, a host loop around the one EM step of
:mod:`gaussmix.inference.em.core`) and :mod:`~gaussmix.inference.streaming.online`.

Peak memory is one chunk plus the model: pages of a memory-mapped file are released
after each chunk, so a 4 GB file is fitted within a few hundred MB (see BENCHMARKS.md).
"""

from gaussmix.inference.em.options import DEFAULT_INIT_ROWS
from gaussmix.inference.streaming.chunks import ChunkSource
from gaussmix.inference.streaming.exact import fit_em_chunked
from gaussmix.inference.streaming.online import (
    OnlineEMState,
    check_schedule,
    fit_em_online,
    online_em_continue,
    online_em_result,
    online_em_start,
    online_em_step,
    step_size,
)

__all__ = [
    "DEFAULT_INIT_ROWS",
    "ChunkSource",
    "OnlineEMState",
    "check_schedule",
    "fit_em_chunked",
    "fit_em_online",
    "online_em_continue",
    "online_em_result",
    "online_em_start",
    "online_em_step",
    "step_size",
]

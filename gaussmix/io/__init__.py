"""Save and load fitted models: :func:`save` and :func:`load`, without pickle.

File format (version 1)
-----------------------
A model is one NumPy ``.npz`` archive (``numpy.savez_compressed``; ``numpy.load`` reads it
with ``allow_pickle=False``). It holds:

``header``
    a 0-d unicode array whose text is a JSON object::

        {"format": "gaussmix", "format_version": 1,
         "class": "GaussianMixture",          # one of CLASSES
         "gaussmix_version": "0.1.0",
         "state": {...}}                       # the tree described below

``a0``, ``a1``, ...
    the arrays, each with its own dtype and shape, named by the ``state`` tree.

The ``state`` tree is JSON in which an array, a tuple, a non-finite float or a NumPyro
distribution is a one-key object::

    {"__array__": "a0", "jax": true}          # a NumPy (or JAX, when "jax") array;
                                               # "scalar": true marks a NumPy scalar
    {"__tuple__": [...]}                       # a tuple
    {"__float__": "nan"}                       # nan, inf or -inf
    {"__distribution__": "Normal", "arguments": {"loc": ..., "scale": ...}}

(a distribution of :mod:`numpyro.distributions` rebuilt from its ``arg_constraints``
arguments; other objects cannot be saved). Plain JSON values (``null``, booleans,
numbers, strings, lists, objects with string keys) stand for themselves.

What ``state`` holds per class:

* ``GaussianMixture``, ``BayesianGaussianMixture``, ``KMeans`` (estimators):
  ``{"hyperparameters": get_params(),
  "fitted": {name: value}}`` for every attribute that is not a hyperparameter: the
  fitted attributes of :data:`FITTED_ATTRIBUTES` (``weights_``, ``means_``, ... and
  private state such as ``_scales``). A ``random_state`` that is not an int or None is
  stored as None (it only seeds fits).
* ``PeakFit`` (a fit result): its fields (dataclass or NamedTuple fields), except
  ``posterior``: a posterior is saved on its own as NetCDF
  (``fit.posterior.to_netcdf(path)``), and ``load`` returns the fit with
  ``posterior=None``.

Loading builds only the classes listed in :data:`CLASSES` and the distributions of
:mod:`numpyro.distributions`; nothing else is imported and no code in the file runs.
Arrays keep their dtype; JAX arrays come back as JAX arrays, so a loaded model predicts
exactly what the saved one did in the same JAX configuration (loading a float64 model
with ``jax_enable_x64`` off gives float32 arrays).

What :func:`load` accepts
-------------------------
A file is data from outside, so :func:`load` checks all of it before it builds anything,
and answers anything else with a ``ValueError`` that names the file and the problem:

* the path: a regular file (``os.stat`` before opening; a folder, FIFO or device is
  refused, never opened), a zip archive (not a ``.npy``, a text file or an empty file)
  whose members are stored or deflated (as NumPy writes them), not encrypted, and
  decompress to at most :data:`MAX_COMPRESSION_RATIO` times their stored size;
* the members: ``header.npy`` plus exactly the arrays the header names. A member the
  header does not name is refused rather than ignored, since ``save`` writes none (the
  file was changed after saving); only the named members are read. Each is a ``.npy`` of
  booleans, integers, floats (at most 64 bits) or unicode text whose declared shape and
  dtype match its size;
* the header: JSON without NaN, infinities or duplicate keys, nested at most
  :data:`MAX_DEPTH` levels, with exactly the keys above and a known ``format_version``
  and class; markers (``__array__`` ...) of the forms above only;
* the state: for an estimator, hyperparameters among its ``get_params`` names (missing
  ones take their defaults) checked by the estimator's own parameter checks, and fitted
  attributes among :data:`FITTED_ATTRIBUTES` (no other name is ever set), each of the
  type, dtype and shape its role needs and consistent with the others: for
  ``GaussianMixture`` ``means_`` (K, D) with K = ``n_components`` and D =
  ``n_features_in_``, ``weights_`` (K,) non-negative and summing to 1, covariances
  finite and positive definite for the ``covariance_type``, precision factors with a
  positive diagonal, ``precisions_`` equal to the factors' product, and the online EM
  state of :meth:`~gaussmix.GaussianMixture.partial_fit` likewise; for ``KMeans``
  ``cluster_centers_`` (K, D) and labels in [0, K); for ``PeakFit`` every field, its
  model rebuilt by :func:`gaussmix.models.peaks.peak_model`, its priors and fixed values
  checked as :func:`gaussmix.fit_peaks` checks them, finite curve parameters of shape ()
  or (B,) and a (P, P) or (B, P, P) covariance. A model that would give NaN later is
  refused now.

The package's modules: :mod:`~gaussmix.io.schema` (the constants above and the error a
damaged file raises), :mod:`~gaussmix.io.writing` (:func:`save`),
:mod:`~gaussmix.io.archive` (the zip archive and its ``.npy`` members),
:mod:`~gaussmix.io.decoding` (the header's JSON and its state tree),
:mod:`~gaussmix.io.validate` (each field's type, shape and value) and
:mod:`~gaussmix.io.reading` (:func:`load`). Only the names of ``__all__`` below are the
public API; the modules' own names serve one another.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from gaussmix import GaussianMixture, save, load
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> model = GaussianMixture(n_components=2, random_state=0).fit(x)
    >>> path = save(model, pathlib.Path(tempfile.mkdtemp()) / "model.npz")
    >>> bool(np.all(load(path).predict(x) == model.predict(x)))
    True
"""

from gaussmix.io.reading import load
from gaussmix.io.schema import (
    CLASSES,
    FITTED_ATTRIBUTES,
    FORMAT_VERSION,
    MAX_COMPRESSION_RATIO,
    MAX_DEPTH,
)
from gaussmix.io.writing import save

__all__ = [
    "CLASSES",
    "FITTED_ATTRIBUTES",
    "FORMAT_VERSION",
    "MAX_COMPRESSION_RATIO",
    "MAX_DEPTH",
    "load",
    "save",
]

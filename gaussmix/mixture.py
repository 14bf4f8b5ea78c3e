"""scikit-learn's ``GaussianMixture`` on the JIT-compiled EM back end.

Same parameters, methods, fitted attributes and error messages as
``sklearn.mixture.GaussianMixture``, plus ``sample_weight`` in :meth:`GaussianMixture.fit`, ``priors``
(``None`` maximum likelihood, ``"default"`` MAP under the program's conjugate prior, or a
dict of NumPyro distributions replacing the program's defaults), the per-iteration
``lower_bounds_`` and the fitted parameters as the NumPyro program's site dict
(:attr:`GaussianMixture.params_`). scikit-learn itself is not needed.

The model is :func:`gaussmix.models.gaussian_mixture`; fitting runs
:func:`gaussmix.inference.em.fit_em` (one compiled program for all iterations and
restarts). Arrays come back as NumPy arrays in the input's precision (float64 needs
JAX's ``jax_enable_x64`` option, which your script sets, never the library).

Past one machine's memory or one device: :meth:`GaussianMixture.fit` reads an
``np.memmap``, a ``.npy`` path or chunks by exact EM over chunks
(:func:`gaussmix.inference.streaming.fit_em_chunked`), :meth:`GaussianMixture.partial_fit`
runs online EM one chunk per call, and ``devices=`` splits the rows over devices
(:func:`gaussmix.inference.shard.fit_em_sharded`).
"""

import os
import warnings
from collections.abc import Mapping

import numpy as np
from jax.typing import ArrayLike

from gaussmix import _background as background
from gaussmix import _measurement as measurement
from gaussmix._base import (
    EstimatorBase,
    NotFittedError,
    check_is_fitted,
    check_mixture_parameters,
    convergence_warning_class,
    numpy_random_state,
    scikit_learn_tags,
    seed_from_random_state,
    validate_data,
)
from gaussmix._mixture_streaming import ChunkedFitMixin, OnlineFitMixin, reads_by_chunks
from gaussmix._posterior_data import posterior_arguments
from gaussmix.inference import compilation, em, shard, streaming
from gaussmix.inference.em import ConvergenceWarning, missing
from gaussmix.models.priors import (
    COVARIANCE_LAYOUTS,
    COVARIANCE_SITES,
    canonical_covariance_type,
    check_covariance_type,
)

__all__ = ["ConvergenceWarning", "GaussianMixture", "NotFittedError", "seed_from_random_state"]

_log_responsibilities = compilation.jit(
    em.log_responsibilities, static_argnames=("covariance_type",)
)


def _overflow_error(X: np.ndarray, rows: np.ndarray, what: str) -> ValueError:
    """The ValueError for rows of finite ``X`` whose computation overflowed its dtype."""
    first = int(np.flatnonzero(rows)[0])
    return ValueError(
        f"overflow in {X.dtype}: {what} {int(rows.sum())} row(s) of X (first: row {first}, "
        f"largest value {float(np.max(np.abs(X[first]))):.3g}) from the fitted components "
        f"is beyond the range of {X.dtype}; " + em.precision_advice(X.dtype)
    )


def _checked_score(norm, log_resp) -> np.ndarray:
    """The log-likelihood, or a ValueError where it is beyond the dtype's range."""
    overflowed = ~np.isfinite(norm)
    if overflowed.any():
        first = int(np.flatnonzero(overflowed)[0])
        raise ValueError(
            f"overflow in {norm.dtype}: the log-likelihood of {int(overflowed.sum())} row(s) "
            f"of X (first: row {first}) is below -{float(np.finfo(norm.dtype).max):.3g}, "
            f"beyond the range of {norm.dtype} (the point lies about 1e19 standard "
            "deviations or more from every component; predict and predict_proba still "
            "answer); " + em.precision_advice(norm.dtype)
        )
    return norm


class GaussianMixture(ChunkedFitMixin, OnlineFitMixin, EstimatorBase):
    """Gaussian mixture fitted by JIT-compiled EM; scikit-learn's API and answers.

    Args:
        n_components: number of mixture components K.
        covariance_type: "full", "tied", "diag", "spherical", or one of mclust's 14
            models :math:`\\Sigma_k = \\lambda_k D_k A_k D_k^T` (volume, shape,
            orientation each Equal, Variable or Identity: "EII", "VII", "EEI", "VEI",
            "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV"; VVV,
            EEE, VVI and VII are full, tied, diag and spherical, with the same numbers).
            A constrained model's ``covariances_`` use its storage layout's shape
            (EII's (K,), EEI/VEI/EVI's (K, D), the others' (K, D, D)), and ``bic``
            counts mclust's free parameters.
        tol: convergence threshold on the change of the mean per-sample lower bound.
        reg_covar: non-negative value added to the diagonal of the covariances.
        max_iter: EM iterations per initialization (0 keeps the initialization).
        n_init: initializations; the one with the largest lower bound is kept (they run
            together, vmapped).
        init_params: "kmeans", "k-means++", "random", "random_from_data" or "hc"
            (mclust's start: the K groups of the model-based hierarchical clustering,
            :func:`gaussmix.inference.em.hierarchical.start_labels`, VVV criterion on
            SVD-transformed data, a random subset of 2000 rows above that; then the
            model's M-step. "hc-EII", "hc-VII", "hc-EEE", "hc-VVV" name mclust's other
            ``hcModelName`` criteria; "hc" is "hc-VVV". With ``n_init`` > 1 the other
            starts are k-means. hc needs the data in memory: not with ``devices`` nor
            data read by chunks).
        weights_init: (K,) initial weights. means_init: (K, D) initial means.
        precisions_init: initial precisions, (K, D, D) full, (D, D) tied, (K, D) diag,
            (K,) spherical.
        random_state: None, int or numpy RandomState: seeds the initialization and
            :meth:`sample`.
        warm_start: continue from the last fit on the next call of :meth:`fit`.
        verbose: 1 prints each initialization's outcome, 2 also every
            ``verbose_interval``-th lower-bound change (printed after the compiled fit).
        verbose_interval: iterations between messages.
        priors: ``None`` (maximum likelihood, scikit-learn's answer), ``"default"`` (MAP
            under the program's conjugate default prior) or ``{site: numpyro
            distribution}`` replacing default priors of
            :func:`gaussmix.models.gaussian_mixture`.
        chunk_size: rows per chunk when :meth:`fit` reads an array by chunks (an
            ``np.memmap`` or ``.npy`` file; None: about 16 MiB per chunk). Setting it
            also makes :meth:`fit` read an in-memory array by chunks, so that a device
            holds one chunk at a time. An iterable's chunks are used as given.
        learning_decay: :math:`\\kappa \\in (0.5, 1]` of the step size
            :math:`\\rho_t = (t + \\tau_0)^{-\\kappa}` of :meth:`partial_fit`.
        learning_offset: :math:`\\tau_0 \\ge 0` of that step size; larger values
            trust early chunks less.
        devices: None (one device, the default), an int n (the first n of
            ``jax.devices()``), a list of jax devices or a one-axis ``Mesh``: :meth:`fit`
            splits the rows of an in-memory ``X`` over these devices and sums the
            statistics with a collective. Under ``jax.distributed`` pass
            ``jax.devices()`` and each process's own rows. ``sklearn.base.clone`` gives
            the clone the same devices.
        nan_policy: what a NaN in ``X`` means. "raise" (the default): an error.
            "marginalize": a missing entry (missing at random); :meth:`fit` maximizes
            the exact likelihood of the observed entries (EM with the conditional means
            and covariances of the missing coordinates, Ghahramani & Jordan 1994;
            :mod:`gaussmix.inference.em.missing`), and :meth:`score_samples`,
            :meth:`predict`, :meth:`predict_proba`, :meth:`score`, :meth:`bic` and
            :meth:`aic` answer from the observed coordinates of each row (its marginal
            density). "omit": :meth:`fit` drops the rows holding any NaN (the fitted
            attributes are those of the other rows; ``sample_weight`` loses the same
            rows), and prediction refuses rows with NaN. A row or column without any
            observed entry, and infinity, are errors under every policy. Data without
            NaN gives the same fit under every policy.
        background: None, or "uniform": a noise component of constant density 1/V whose
            weight ``background_weight_`` is fitted (mclust's noise); ``weights_`` then
            sum to one minus it, ``predict`` gives -1 where it is the most probable,
            ``predict_proba`` has it as a last column (:mod:`gaussmix._background`).
        background_volume: V (default: the volume of the fitting data's bounding box;
            rows with NaN then get the box's density over their observed coordinates).

    Which EM :meth:`fit` runs follows from ``X`` and these parameters, never from its
    size: in-memory EM for an array (:func:`gaussmix.inference.em.fit_em`); exact EM
    over chunks for an ``np.memmap``, a ``.npy`` path, a callable returning an iterator
    of chunks, a list of (n, D) chunks or ``(x, w)`` tuples, or when ``chunk_size`` is
    set (:func:`gaussmix.inference.streaming.fit_em_chunked`; equal to in-memory EM up
    to the order of floating-point sums); multi-device EM when ``devices`` is set
    (:func:`gaussmix.inference.shard.fit_em_sharded`). The last two start from
    :func:`gaussmix.inference.em.fit_em`'s initialization on a uniform sample of at most
    :data:`gaussmix.inference.streaming.DEFAULT_INIT_ROWS` rows (all rows, in order, when
    there are not more; further ``n_init`` restarts use their own seeds).

    Attributes:
        weights_: (K,) the components' weights (summing to 1 - ``background_weight_``).
        means_: (K, D) the component means.
        covariances_: in the storage layout of ``covariance_type`` (scikit-learn's
            for the classic four).
        precisions_: the inverses of ``covariances_``, in the same layout.
        precisions_cholesky_: Cholesky factors of ``precisions_``, in the same layout.
        converged_: whether the kept initialization converged.
        n_iter_: EM iterations of the kept initialization.
        lower_bound_: its final lower bound (mean log-likelihood per sample, plus the
            log prior per unit weight for MAP).
        lower_bounds_: the lower bound after each iteration of the kept initialization.
        n_features_in_: D, the number of features seen by ``fit``.
        feature_names_in_: the column names of a DataFrame ``X``, when it had them.
        method_: the M-step that ran ("maximum_likelihood", "conjugate_map" or
            "generalized_em").
        background_weight_: with ``background="uniform"``, the background's weight.
        background_volume_: its volume V.
        background_log_density_: -log V.
        background_lower_, background_upper_: (D,) the fitting data's bounding box
            (where ``sample`` draws the background's points).

    Example:
        >>> import numpy as np
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> sorted(gm.means_[:, 0].round(3).tolist())
        [1.0, 10.0]
        >>> int(gm.predict([[0, 0]])[0]) != int(gm.predict([[12, 3]])[0])
        True

        Data on disk, fitted chunk by chunk (the same answer as in memory):

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "X.npy"
        >>> np.save(path, X.astype(float))
        >>> on_disk = GaussianMixture(n_components=2, random_state=0, chunk_size=4).fit(path)
        >>> bool(np.allclose(on_disk.means_, gm.means_))
        True
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        priors=None,
        chunk_size=None,
        learning_decay=0.7,
        learning_offset=10.0,
        devices=None,
        nan_policy="raise",
        background=None,
        background_volume=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.priors = priors
        self.chunk_size = chunk_size
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.devices = devices
        self.nan_policy = nan_policy
        self.background = background
        self.background_volume = background_volume

    def __sklearn_tags__(self):
        tags = scikit_learn_tags("density_estimator")
        tags.non_deterministic = self.random_state is None
        return tags

    # -- fitting -------------------------------------------------------------------------

    def _check_parameters(self) -> None:
        name = type(self).__name__
        check_mixture_parameters(self, em.INIT_PARAMS)
        if not isinstance(self.covariance_type, str) or (
            self.covariance_type not in COVARIANCE_LAYOUTS
        ):
            raise ValueError(
                f"The 'covariance_type' parameter of {name} must be a str among "
                f"{set(COVARIANCE_LAYOUTS)}. Got {self.covariance_type!r} instead."
            )
        if em.hierarchical_model(self.init_params) is not None and self.devices is not None:
            raise ValueError(
                f"init_params={self.init_params!r} needs the data in memory on the host, but devices="
                f"{self.devices!r} fits it sharded; leave devices=None, or use "
                "init_params='kmeans' with devices."
            )
        if not (
            self.priors is None or self.priors == "default" or isinstance(self.priors, Mapping)
        ):
            raise ValueError(
                f"The 'priors' parameter of {name} must be None, 'default' or a dict "
                f"{{site: numpyro distribution}}. Got {self.priors!r} instead."
            )
        if not isinstance(self.nan_policy, str) or self.nan_policy not in missing.NAN_POLICIES:
            raise ValueError(
                f"The 'nan_policy' parameter of {name} must be a str among "
                f"{set(missing.NAN_POLICIES)}. Got {self.nan_policy!r} instead."
            )
        streaming.check_schedule(self.learning_decay, self.learning_offset)
        background.check_parameters(self, name)

    def fit(self, X, y=None, sample_weight=None, measurement_covariances=None):
        """Estimate the parameters by EM, keeping the best of ``n_init`` initializations.

        Args:
            X: (N, D) data: an array (in-memory EM, or split over ``devices``), or data
                read chunk by chunk by exact EM: an ``np.memmap``, a path to a ``.npy``
                file, a list of (n, D) chunks or ``(x, w)`` tuples (``w`` the (n,)
                weights of ``x``), or a callable returning a fresh iterator of such
                chunks (each EM iteration reads the data once). ``chunk_size`` also
                sends an in-memory array through the chunks.
            y: ignored.
            sample_weight: (N,) non-negative weights of the points; for an
                ``np.memmap`` or ``.npy`` path also a memmap or ``.npy`` path. Chunks
                of an iterable carry their weights as ``(x, w)`` tuples instead.
            measurement_covariances: None, or each row's Gaussian error covariance
                (N, D, D) or variances (N, D): extreme deconvolution
                (:mod:`gaussmix._measurement`); the fitted parameters then describe the
                error-free points. In every execution mode: in memory, with
                ``devices``, and read by chunks: for an ``np.memmap``, a ``.npy`` path
                or ``chunk_size`` an array, memmap or ``.npy`` path of N rows read
                alongside; for a list of chunks a list of one (n, D, D) or (n, D) array
                per chunk; or each chunk given as ``(x, w, s)`` (``w`` may be None), all
                chunks or none. Each chunk's covariances must have its number of rows
                (checked chunk by chunk).

        Returns:
            self.

        Raises:
            ValueError: bad input (named, with the fix), e.g. a missing file, chunks of
                different widths, a one-shot iterator (use :meth:`partial_fit`), or more
                ``devices`` than exist.

        Warns:
            ConvergenceWarning: the best initialization reached ``max_iter``.
        """
        self._fit(X, sample_weight, measurement_covariances)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, measurement_covariances=None):
        """Fit, then return the labels of ``X`` under the final parameters (N,).

        ``X`` and ``sample_weight`` as in :meth:`fit`; chunked data is labelled chunk by
        chunk.
        """
        validated = self._fit(X, sample_weight, measurement_covariances)
        if validated is None:
            return self._chunked(X, self._label, measurement_covariances)
        return self._label(*self._log_resp(validated, measurement_covariances))

    def partial_fit(self, X, y=None, sample_weight=None, measurement_covariances=None):
        """Online EM on one more chunk (:meth:`OnlineFitMixin.partial_fit`), with
        measurement errors and a background too."""
        return super().partial_fit(X, y, sample_weight, measurement_covariances)

    def _fit(self, X, sample_weight, measurement_covariances=None) -> np.ndarray | None:
        """Fit by the EM that ``X`` and the parameters call for; returns the validated
        in-memory ``X``, or None when it was read by chunks."""
        self._check_parameters()
        if reads_by_chunks(X, self.chunk_size):
            self._fit_chunks(X, sample_weight, measurement_covariances)
            return None
        X = validate_data(
            self, X, reset=True, ensure_min_samples=2, allow_nan=self.nan_policy != "raise"
        )
        weight = self._check_sample_weight(sample_weight, X.shape[0], X.dtype)
        validated = X  # fit_predict labels every row, as fit(X).predict(X)
        noise = measurement.kept_rows(measurement_covariances, X, self.nan_policy)
        X, weight = self._apply_nan_policy(X, weight)
        n_samples = X.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {n_samples}"
            )
        options, n_init = self._em_options()
        if self.devices is None:
            result = em.fit_em(
                X,
                sample_weight=weight,
                options=options,
                nan_policy="marginalize",
                measurement_covariances=noise,
                **background.fit_arguments(self, X),
            )
        else:
            result = shard.fit_em_sharded(
                X,
                sample_weight=weight,
                devices=self.devices,
                options=options,
                nan_policy="marginalize",
                measurement_covariances=noise,
                **background.fit_arguments(self, X),
            )
        self._finish_fit(result, n_init, data=(X, weight, noise))
        return validated

    def _apply_nan_policy(self, X: np.ndarray, weight):
        """``X`` and ``weight`` for the fit: the rows with NaN dropped under "omit";
        under "marginalize" rows and columns without an observed entry refused."""
        holes = np.isnan(X)
        if not holes.any():
            return X, weight
        if self.nan_policy == "omit":
            keep = ~holes.any(axis=1)
            if weight is not None:
                weight = weight[keep]
                if weight.sum() <= 0:
                    raise ValueError(
                        "sample_weight sums to zero over the rows without NaN that "
                        "nan_policy='omit' keeps; give some of them a positive weight, or "
                        "pass nan_policy='marginalize'."
                    )
            return X[keep], weight
        missing.check_missing(X, "X")
        return X, weight

    def _em_options(self) -> tuple[em.EMOptions, int]:
        """The EM options, validated once for whichever EM runs (a warm start continues
        from the last fit), and the number of initializations."""
        if not (self.warm_start and hasattr(self, "converged_")):
            inits = {
                "weights_init": self.weights_init,
                "means_init": self.means_init,
                "precisions_init": self.precisions_init,
            }
            n_init, start = self.n_init, -np.inf
        else:
            inits = {
                "weights_init": self.weights_,
                "means_init": self.means_,
                "precisions_init": self.precisions_,
            }
            n_init, start = 1, self.lower_bound_
            inits = background.normalized_inits(self, inits)
        options = {
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "priors": self.priors,
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "reg_covar": float(self.reg_covar),
            "n_init": int(n_init),
            "init_params": self.init_params,
            "seed": seed_from_random_state(self.random_state),
            "start_lower_bound": float(start),
            "init_rows": streaming.DEFAULT_INIT_ROWS,
            **inits,
        }
        return em.check_options(**options), n_init

    def _finish_fit(self, result: em.EMResult, n_init: int, data=None, fit_weight=None) -> None:
        """Fitted attributes, and what :meth:`partial_fit` continues from: the total weight
        of the fitted data (``_fit_weight``) and, for MAP on in-memory ``data`` (``(X,
        weight)``), the online state holding the data's statistics under the fitted
        parameters. Any online state of earlier :meth:`partial_fit` calls is dropped."""
        self._set_result(result)
        self._online_record, self._online_bounds = None, []
        if data is not None:
            X, weight, noise = data
            fit_weight = float(X.shape[0] if weight is None else np.sum(weight, dtype=np.float64))
            if self.priors is not None:
                self._start_online_after_fit(X, weight, noise)
        self._fit_weight = fit_weight
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                convergence_warning_class(),
                stacklevel=4,
            )
        self._print_verbose(n_init)

    def _fitted_parameters(self) -> em.MixtureParameters:
        return em.MixtureParameters(
            self.weights_, self.means_, self.covariances_, self.precisions_cholesky_
        )

    def _check_sample_weight(self, sample_weight, n_samples, dtype):
        if sample_weight is None:
            return None
        weight = np.asarray(sample_weight)
        if weight.ndim == 0:
            weight = np.full(n_samples, float(weight))
        if weight.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric, got dtype {weight.dtype}.")
        if weight.ndim != 1 or weight.shape[0] != n_samples:
            raise ValueError(f"sample_weight.shape == {weight.shape}, expected ({n_samples},)!")
        if weight.dtype.kind == "f" and np.isnan(weight).any():
            raise ValueError("sample_weight contains NaN; give every point a finite weight.")
        if weight.dtype.kind == "f" and np.isinf(weight).any():
            raise ValueError("sample_weight contains infinity; give every point a finite weight.")
        weight = em.check_finite_input(weight, "sample_weight", dtype)
        if np.any(weight < 0):
            raise ValueError("Negative values in data passed to `sample_weight`")
        if weight.sum() <= 0:
            raise ValueError("sample_weight sums to zero; give some points a positive weight.")
        return weight

    def _set_result(self, result: em.EMResult) -> None:
        site = COVARIANCE_SITES[self.covariance_type]
        layout = COVARIANCE_LAYOUTS[self.covariance_type]
        self.method_ = result.method
        self.weights_ = np.asarray(result.params["weights"])
        self.means_ = np.asarray(result.params["means"])
        self.covariances_ = np.asarray(result.params[site])
        self.precisions_cholesky_ = np.asarray(result.precisions_cholesky)
        factor = self.precisions_cholesky_
        if layout == "full":
            self.precisions_ = factor @ np.swapaxes(factor, -1, -2)
        elif layout == "tied":
            self.precisions_ = factor @ factor.T
        else:
            self.precisions_ = factor**2
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.lower_bound)
        self.lower_bounds_ = np.asarray(result.lower_bounds)[: self.n_iter_]
        background.set_attributes(self, result)
        self._scales = np.asarray(result.params["scales"]) if "scales" in result.params else None

    def _print_verbose(self, n_init: int) -> None:
        if not self.verbose:
            return
        status = "converged" if self.converged_ else "did not converge"
        print("Initialization 0" if n_init == 1 else f"Initializations 0-{n_init - 1} (best kept)")
        if self.verbose >= 2:
            previous = -np.inf
            for iteration, bound in enumerate(self.lower_bounds_, start=1):
                if iteration % self.verbose_interval == 0:
                    print(f"  Iteration {iteration}\t ll change {bound - previous:.5f}")
                previous = bound
        print(f"Initialization {status}. lower bound {self.lower_bound_:.5f}.")

    # -- prediction ----------------------------------------------------------------------

    @property
    def params_(self) -> dict[str, np.ndarray]:
        """Fitted parameters as the program's site dict (NUTS init values).

        Keys: ``weights``, ``means`` and the covariance site of the type
        (``covariances`` | ``covariance`` | ``variances``), plus ``scales`` when the
        priors name it.
        """
        check_is_fitted(self)
        site = COVARIANCE_SITES[self.covariance_type]
        params = {"weights": self.weights_, "means": self.means_, site: self.covariances_}
        if getattr(self, "_scales", None) is not None:
            params["scales"] = self._scales
        return params

    def sample_posterior(
        self,
        X: ArrayLike,
        *,
        num_warmup: int = 1000,
        num_samples: int = 1000,
        num_chains: int = 4,
        random_state=None,
        progress_bar: bool | None = None,
        sample_weight: ArrayLike | None = None,
        measurement_covariances: ArrayLike | None = None,
    ):
        """NUTS posterior of :func:`gaussmix.models.gaussian_mixture` on ``X``.

        The program always carries a proper prior: its conjugate default when
        ``priors`` is ``None`` or ``"default"``, else the user's ``priors``. Chains start
        from this estimator's fitted parameters (fitting first when it is not fitted) and
        the draws are relabeled to its labelling, so ``posterior["means"][..., k, :]``
        matches ``means_[k]``.

        Args:
            X: (N, D) data.
            num_warmup, num_samples, num_chains: NUTS settings.
            random_state: None, int or RandomState seeding the chains (default: the
                estimator's ``random_state``).
            progress_bar: a tqdm bar; default only on a terminal.
            sample_weight: (N,) non-negative weights multiplying each point's
                log-likelihood.
            measurement_covariances: None, or each row's error covariance, (N, D, D) or
                (N, D) variances: the program observes row n under
                :math:`\\Sigma_k + S_n` (the draws describe the error-free mixture).

        Imperfect data as :meth:`fit` reads it (:mod:`gaussmix._posterior_data`): under
        ``nan_policy="marginalize"`` rows with NaN are scored by their observed
        coordinates, "omit" drops them, "raise" refuses them; with
        ``background="uniform"`` the program has the fitted background of density
        ``1 / background_volume_``, its weight the last of the site ``proportions``
        (K + 1) and the deterministic ``background_weight`` (relabeling permutes the K
        Gaussian components only).

        Returns:
            An ``xarray.DataTree`` with groups ``posterior`` (``weights``, ``means`` and
            the covariance site), ``sample_stats``, ``log_likelihood`` (marginal,
            pointwise: each row's density of its observed coordinates, with its errors
            and the background), ``observed_data`` and ``mixture`` (posterior-averaged
            ``responsibilities`` (N, K), (N, K + 1) with a background); see
            :func:`gaussmix.inference.mcmc.sample_mixture`.

        Example:
            >>> import numpy as np
            >>> rng = np.random.default_rng(0)
            >>> X = np.concatenate([rng.normal(-3, 1, (100, 1)), rng.normal(3, 1, (100, 1))])
            >>> gm = GaussianMixture(2, covariance_type="spherical", random_state=0).fit(X)
            >>> tree = gm.sample_posterior(X, num_warmup=200, num_samples=200, num_chains=2,
            ...                            progress_bar=False)
            >>> bool(np.allclose(tree.posterior["means"].mean(("chain", "draw")), gm.means_,
            ...                  atol=0.5))
            True
        """
        from gaussmix.inference.mcmc import sample_mixture

        # the program's name of the type: an alias runs as its classic type; every one
        # of mclust's 14 models has a program
        covariance_type = canonical_covariance_type(self.covariance_type)
        check_covariance_type(covariance_type)
        if not self.__sklearn_is_fitted__():
            self.fit(
                X, sample_weight=sample_weight, measurement_covariances=measurement_covariances
            )
        X, arguments, init = posterior_arguments(self, X, sample_weight, measurement_covariances)
        seed = seed_from_random_state(self.random_state if random_state is None else random_state)
        return sample_mixture(
            X,
            n_components=self.n_components,
            covariance_type=covariance_type,
            priors=None if self.priors in (None, "default") else self.priors,
            **arguments,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            seed=seed,
            progress_bar=progress_bar,
            init=init,
        )

    def _log_resp(self, X: np.ndarray, measurement_covariances=None):
        """Log-likelihood (n,) and log responsibilities (n, K) of validated ``X``.

        Rows whose log-likelihood is below the dtype's range keep finite limit
        responsibilities and a log-likelihood of -inf (see
        :func:`gaussmix.inference.em.log_responsibilities`); a row where even ``X - means``
        overflows is a ValueError. Under ``nan_policy="marginalize"`` rows with NaN get
        the answers of their observed coordinates (the others are computed as without).
        With ``measurement_covariances`` S: the answers under :math:`\\Sigma_k + S_n`.
        A fitted background adds its column last (:mod:`gaussmix._background`).
        """
        background.check_rows(self, X, measurement_covariances)
        if measurement_covariances is not None:
            return measurement.log_responsibilities(self, X, measurement_covariances)
        holes = np.isnan(X)
        if holes.any():
            return self._marginal_log_resp(X, holes)
        # NumPy in: the compiled function moves the arrays in one go
        norm, log_resp = _log_responsibilities(
            X,
            self.weights_.astype(X.dtype),
            self.means_.astype(X.dtype),
            self.precisions_cholesky_.astype(X.dtype),
            covariance_type=COVARIANCE_LAYOUTS[self.covariance_type],
        )
        norm, log_resp = np.asarray(norm), np.asarray(log_resp)
        broken = np.isnan(log_resp).any(axis=1)
        if broken.any():
            raise _overflow_error(X, broken, "the distance of")
        if background.fitted(self):
            return background.with_background(norm, log_resp, background.log_background(self))
        return norm, log_resp

    def _marginal_log_resp(self, X: np.ndarray, holes: np.ndarray):
        """:meth:`_log_resp` of ``X`` whose entries ``holes`` are NaN: complete rows as
        without NaN, the others from the marginal densities of their observed entries."""
        if self.nan_policy != "marginalize":
            raise ValueError(
                f"Input X contains NaN, and this {type(self).__name__} was built with "
                f"nan_policy={self.nan_policy!r}; set nan_policy='marginalize' "
                "(gm.set_params(nan_policy='marginalize')) to score, predict and label rows "
                "with missing entries from their observed coordinates."
            )
        empty = np.flatnonzero(holes.all(axis=1))
        if empty.size:
            raise ValueError(
                f"{empty.size} row(s) of X have no observed entry (all NaN; first: row "
                f"{int(empty[0])}); a row needs at least one observed value to be scored."
            )
        partial = holes.any(axis=1)
        norm = np.empty(X.shape[0], X.dtype)
        log_resp = np.empty((X.shape[0], int(self.n_components) + background.fitted(self)), X.dtype)
        if not partial.all():
            norm[~partial], log_resp[~partial] = self._log_resp(X[~partial])
        found = missing.marginal_log_responsibilities(
            X[partial], self._fitted_parameters(), self.covariance_type
        )
        norm[partial], log_resp[partial] = background.marginal(self, X[partial], *found)
        return norm, log_resp

    def _estimate_weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        norm, log_resp = self._log_resp(X)
        return log_resp + norm[:, None]

    def _responsibility_output(self, X, pick, measurement_covariances=None) -> np.ndarray:
        """``pick(norm, log_resp)`` of ``X``; an ``np.memmap`` or ``.npy`` path is read
        chunk by chunk (``chunk_size`` rows), as :meth:`fit` reads it."""
        check_is_fitted(self)
        if isinstance(X, np.memmap | str | os.PathLike):
            return self._chunked(X, pick, measurement_covariances)
        return pick(*self._log_resp(self._validate_rows(X), measurement_covariances))

    def _validate_rows(self, X) -> np.ndarray:
        """Rows to score, predict or label: NaN kept unless ``nan_policy="raise"``."""
        return validate_data(self, X, reset=False, allow_nan=self.nan_policy != "raise")

    def score_samples(self, X: ArrayLike, measurement_covariances=None) -> np.ndarray:
        """Log-likelihood of each sample, shape (N,); with ``measurement_covariances``
        (as in :meth:`fit`, and in :meth:`score`, :meth:`predict`, :meth:`predict_proba`,
        the criteria) of each noisy sample, without of error-free points.

        Finite for every point whose log-likelihood the dtype can hold (a point 1e18
        standard deviations out scores about -5e35 in float32).

        Raises:
            ValueError: the log-likelihood of a point is beyond the dtype's range ("overflow
                in float32: ..."); :meth:`predict` and :meth:`predict_proba` still answer.
        """
        return self._responsibility_output(X, _checked_score, measurement_covariances)

    def score(self, X: ArrayLike, y=None, measurement_covariances=None) -> float:
        """Mean per-sample log-likelihood of ``X``."""
        return float(np.mean(self.score_samples(X, measurement_covariances)))

    def predict(self, X: ArrayLike, measurement_covariances=None) -> np.ndarray:
        """Most probable component of each sample, shape (N,)."""
        return self._responsibility_output(X, self._label, measurement_covariances)

    def _label(self, norm, log_resp) -> np.ndarray:
        """The most probable component of each row, -1 where it is the background."""
        return background.labels(log_resp, int(self.n_components))

    def predict_proba(self, X: ArrayLike, measurement_covariances=None) -> np.ndarray:
        """Responsibilities, shape (N, K); rows sum to 1."""
        return self._responsibility_output(
            X, lambda norm, log_resp: np.exp(log_resp), measurement_covariances
        )

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw from the fitted mixture (scikit-learn's algorithm and random stream).

        Returns:
            X (n_samples, D) and the component labels (n_samples,).
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        _, n_features = self.means_.shape
        rng = numpy_random_state(self.random_state)
        if background.fitted(self):  # K + 1 counts, the background's uniform in the box
            return background.sample(self, n_samples, rng, COVARIANCE_LAYOUTS[self.covariance_type])
        counts = rng.multinomial(n_samples, self.weights_.astype(np.float64))
        means = self.means_.astype(np.float64)
        covariances = self.covariances_.astype(np.float64)
        layout = COVARIANCE_LAYOUTS[self.covariance_type]
        if layout == "full":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, c, int(n))
                    for m, c, n in zip(means, covariances, counts, strict=True)
                ]
            )
        elif layout == "tied":
            X = np.vstack(
                [
                    rng.multivariate_normal(m, covariances, int(n))
                    for m, n in zip(means, counts, strict=True)
                ]
            )
        else:
            X = np.vstack(
                [
                    m + rng.standard_normal(size=(n, n_features)) * np.sqrt(c)
                    for m, c, n in zip(means, covariances, counts, strict=True)
                ]
            )
        labels = np.concatenate([np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts)])
        return X.astype(self.means_.dtype), labels

    # -- model selection -----------------------------------------------------------------

    def _n_parameters(self) -> int:
        """Free parameters: covariance + means + K - 1 weights
        (:func:`gaussmix.inference.em.n_parameters`)."""
        _, n_features = self.means_.shape
        count = em.n_parameters(self.covariance_type, int(self.n_components), int(n_features))
        return count + background.extra_parameters(self)

    def bic(self, X: ArrayLike, measurement_covariances=None) -> float:
        """Bayesian information criterion :math:`-2 \\log L + p \\log N` (lower is better)."""
        X = np.asarray(X)
        log_likelihood = self.score(X, measurement_covariances=measurement_covariances)
        return -2 * log_likelihood * X.shape[0] + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X: ArrayLike, measurement_covariances=None) -> float:
        """Akaike information criterion :math:`-2 \\log L + 2 p` (lower is better)."""
        X = np.asarray(X)
        log_likelihood = self.score(X, measurement_covariances=measurement_covariances)
        return -2 * log_likelihood * X.shape[0] + 2 * self._n_parameters()

    def icl(self, X: ArrayLike, measurement_covariances=None) -> float:
        """mclust's integrated completed likelihood criterion (lower is better): the BIC
        plus :math:`-2 \\sum_n \\log z_{n, \\hat k(n)}`, the cost of the points the mixture
        assigns with doubt (:func:`gaussmix.selection.integrated_completed_likelihood`).

        Example:
            >>> import numpy as np
            >>> from gaussmix import GaussianMixture
            >>> X = np.random.default_rng(0).normal(size=(200, 2))
            >>> gm = GaussianMixture(2, random_state=0).fit(X)
            >>> bool(gm.icl(X) >= gm.bic(X))
            True
        """
        from gaussmix.selection import integrated_completed_likelihood

        if measurement_covariances is not None:
            return measurement.icl(self, X, measurement_covariances)
        return integrated_completed_likelihood(self, X)

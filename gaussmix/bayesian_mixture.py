"""scikit-learn's ``BayesianGaussianMixture`` on the JIT-compiled variational back end.

Same parameters, methods, fitted attributes and error messages as
``sklearn.mixture.BayesianGaussianMixture`` (variational inference with a Dirichlet
distribution or a truncated Dirichlet process on the weights and a Normal-Wishart prior
on each component), the same lower bound at every iteration from the same start, plus
``sample_weight`` in :meth:`BayesianGaussianMixture.fit`, mclust's names of the four
covariance families ("VVV", "EEE", "VVI", "VII") and float32 as well as float64 (float64
needs JAX's ``jax_enable_x64`` option, which your script sets, never the library). The
updates are :mod:`gaussmix.inference.em.variational`: the EM E-step's statistics with the
variational posterior's update in place of the M-step, all iterations one compiled
``lax.while_loop``.
"""

import numbers
import time
import warnings

import jax
import numpy as np
from jax.typing import ArrayLike

from gaussmix._base import (
    EstimatorBase,
    check_is_fitted,
    check_mixture_parameters,
    convergence_warning_class,
    numpy_random_state,
    scikit_learn_tags,
    seed_from_random_state,
    validate_data,
)
from gaussmix._mixture_streaming import check_rereadable, chunk_source, reads_by_chunks
from gaussmix.inference import compilation, em
from gaussmix.inference.em import variational
from gaussmix.inference.streaming import DEFAULT_INIT_ROWS
from gaussmix.inference.streaming import variational as chunked

__all__ = ["BayesianGaussianMixture"]

#: The starts scikit-learn's BayesianGaussianMixture offers.
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def _posterior_log_responsibilities(posterior, X, config):
    """(N,) log normalizers and (N, K) log responsibilities of the variational E-step."""
    estep = variational.estep_parameters(posterior, config)
    return em.log_responsibilities(
        X, estep.weights, estep.means, estep.precisions_cholesky, config.covariance_type
    )


_log_responsibilities = compilation.jit(
    _posterior_log_responsibilities, static_argnames=("config",)
)


def _positive_or_none(name: str, value, owner: str) -> None:
    """scikit-learn's ``[None, Interval(Real, 0, None, closed="neither")]``."""
    if value is None:
        return
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    ):
        return
    raise ValueError(
        f"The {name!r} parameter of {owner} must be None or a float in the range (0.0, inf). "
        f"Got {value!r} instead."
    )


class BayesianGaussianMixture(EstimatorBase):
    """Variational Bayesian Gaussian mixture; scikit-learn's API and answers.

    The posterior over the weights (a Dirichlet distribution, or a Dirichlet process
    truncated at ``n_components`` by stick-breaking), the means and the precisions
    (Normal-Wishart) is approximated by mean-field variational inference; components the
    data do not need get weights near zero, so ``n_components`` is an upper bound.

    .. math::

        \\pi \\sim \\operatorname{Dir}(\\alpha_0) \\;\\text{or}\\; \\operatorname{GEM}(\\alpha_0),
        \\quad \\Lambda_k \\sim \\mathcal{W}(W_0, \\nu_0),\\quad
        \\mu_k \\sim \\mathcal{N}(m_0, (\\beta_0 \\Lambda_k)^{-1}),\\quad
        x_n \\sim \\textstyle\\sum_k \\pi_k \\mathcal{N}(\\mu_k, \\Lambda_k^{-1}).

    Args:
        n_components: K, the largest number of components.
        covariance_type: "full", "tied", "diag", "spherical" or mclust's names of these
            four, "VVV", "EEE", "VVI", "VII" (the other mclust models have no closed-form
            variational update).
        tol: convergence threshold on the change of the lower bound (a total over the
            rows, not a mean).
        reg_covar: non-negative value added to the diagonal of the sample covariances.
        max_iter: iterations per initialization.
        n_init: initializations; the one with the largest lower bound is kept.
        init_params: "kmeans", "k-means++", "random" or "random_from_data".
        weight_concentration_prior_type: "dirichlet_process" or "dirichlet_distribution".
        weight_concentration_prior: :math:`\\alpha_0 > 0`; None: 1 / n_components.
        mean_precision_prior: :math:`\\beta_0 > 0`; None: 1.
        mean_prior: (D,) :math:`m_0`; None: the data mean.
        degrees_of_freedom_prior: :math:`\\nu_0 > D - 1`; None: D.
        covariance_prior: :math:`W_0^{-1}`: (D, D) symmetric positive-definite for full
            and tied, (D,) positive for diag, a positive float for spherical; None: the
            sample covariance (its diagonal, the mean of that).
        random_state: None, an int, or a NumPy ``RandomState`` / ``Generator``.
        warm_start: continue from the last fit's posterior (one initialization).
        verbose: 0 silent, 1 each initialization, 2 also every ``verbose_interval``
            iterations.
        verbose_interval: iterations between messages.
        chunk_size: rows per chunk when :meth:`fit` reads an array by chunks (None:
            about 16 MiB per chunk for memmaps and ``.npy`` paths, in memory for arrays).
        devices: None (one device), an int n (the first n of ``jax.devices()``), a list
            of jax devices or a one-axis ``Mesh``: :meth:`fit` splits the rows of an
            in-memory ``X`` over them and sums the statistics by ``psum`` (one process;
            the in-memory fit up to the order of floating-point sums).

    Attributes:
        weights_: (K,) posterior mean weights.
        means_: (K, D) posterior means.
        covariances_, precisions_, precisions_cholesky_: scikit-learn's layouts, the
            covariance being :math:`(\\nu_k W_k)^{-1}`.
        weight_concentration_: Dirichlet (K,) or the process's pair of (K,) arrays.
        mean_precision_: (K,).
        degrees_of_freedom_: (K,) (tied: a float).
        weight_concentration_prior_, mean_precision_prior_, mean_prior_: the priors used.
        degrees_of_freedom_prior_, covariance_prior_: the priors used.
        converged_: whether the best initialization converged.
        n_iter_: its iterations.
        lower_bound_: its final lower bound.
        lower_bounds_: its lower bound after each iteration.
        n_features_in_: D, the number of features seen by ``fit``.
        feature_names_in_: the column names of a DataFrame ``X``, when it had them.

    Example:
        >>> import numpy as np
        >>> from gaussmix import BayesianGaussianMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(8, 1, (100, 2))])
        >>> bgm = BayesianGaussianMixture(n_components=5, random_state=0).fit(X)
        >>> int((bgm.weights_ > 0.1).sum())
        2
    """

    def __init__(
        self,
        *,
        n_components: int = 1,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunk_size: int | None = None,
        devices=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size
        self.devices = devices

    def __sklearn_tags__(self):
        tags = scikit_learn_tags("density_estimator")
        tags.non_deterministic = self.random_state is None
        return tags

    # -- checks --------------------------------------------------------------------------

    def _check_parameters(self) -> str:
        """scikit-learn's parameter constraints; returns the covariance layout."""
        name = type(self).__name__
        check_mixture_parameters(self, INIT_PARAMS)
        layout = variational.variational_layout(self.covariance_type)
        if self.weight_concentration_prior_type not in variational.PRIOR_TYPES:
            raise ValueError(
                f"The 'weight_concentration_prior_type' parameter of {name} must be a str "
                f"among {set(variational.PRIOR_TYPES)}. Got "
                f"{self.weight_concentration_prior_type!r} instead."
            )
        for parameter in (
            "weight_concentration_prior",
            "mean_precision_prior",
            "degrees_of_freedom_prior",
        ):
            _positive_or_none(parameter, getattr(self, parameter), name)
        return layout

    def _check_priors(self, moments, dtype, config) -> variational.VariationalPrior:
        """The hyperparameters (scikit-learn's ``_check_parameters(X)``) of data of these
        (mean, covariance) ``moments``, stored as the ``*_prior_`` attributes."""
        n_features = np.shape(moments[0])[0]
        layout = config.covariance_type
        mean_prior = None
        if self.mean_prior is not None:
            mean_prior = _finite_array(self.mean_prior, "mean_prior")
            if mean_prior.shape != (n_features,):
                raise ValueError(
                    f"The parameter 'means' should have the shape of {(n_features,)}, but "
                    f"got {mean_prior.shape}"
                )
        if self.degrees_of_freedom_prior is not None and (
            self.degrees_of_freedom_prior <= n_features - 1.0
        ):
            raise ValueError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than "
                f"{n_features - 1}, but got {self.degrees_of_freedom_prior:.3f}."
            )
        covariance_prior = None
        if self.covariance_prior is not None:
            covariance_prior = _checked_covariance_prior(self.covariance_prior, layout, n_features)
        prior = variational.moment_prior(
            *moments,
            config,
            dtype,
            weight_concentration=self.weight_concentration_prior,
            mean_precision=self.mean_precision_prior,
            mean=mean_prior,
            degrees_of_freedom=self.degrees_of_freedom_prior,
            covariance=covariance_prior,
        )
        self.weight_concentration_prior_ = float(prior.weight_concentration)
        self.mean_precision_prior_ = float(prior.mean_precision)
        self.mean_prior_ = np.asarray(prior.mean)
        self.degrees_of_freedom_prior_ = float(prior.degrees_of_freedom)
        self.covariance_prior_ = (
            float(prior.covariance) if layout == "spherical" else np.asarray(prior.covariance)
        )
        return prior

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
        weight = weight.astype(dtype)
        if not np.isfinite(weight).all():
            raise ValueError(
                "sample_weight contains NaN or infinity; give every point a finite weight."
            )
        if (weight < 0).any():
            raise ValueError(
                "sample_weight contains negative values; weights must be non-negative."
            )
        if weight.sum() <= 0:
            raise ValueError("sample_weight sums to zero; give some point a positive weight.")
        return weight

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y=None, sample_weight: ArrayLike | None = None):
        """Fit the variational posterior, keeping the best of ``n_init`` initializations.

        Data that need not fit in memory is read by chunks, one pass per iteration (the
        in-memory fit up to the order of floating-point sums; see
        :mod:`gaussmix.inference.streaming.variational`): an ``np.memmap``, a ``.npy``
        path, a list of (n, D) chunks or ``(x, w)`` tuples, a callable returning an
        iterator of those, or any array with ``chunk_size`` set. The initialization then
        runs on a uniform sample of at most 100,000 rows (the whole data, in order, when
        it has no more: the in-memory start).

        Args:
            X: (N, D) data, or chunks as above.
            y: ignored.
            sample_weight: (N,) non-negative weights (a weight of 2 counts a row twice);
                an array, memmap or ``.npy`` path alongside array data read by chunks.

        Returns:
            self.

        Warns:
            ConvergenceWarning: the best initialization reached ``max_iter``.
        """
        if reads_by_chunks(X, self.chunk_size):
            self._fit_chunks(X, sample_weight)
        else:
            self._fit(X, sample_weight)
        return self

    def fit_predict(self, X: ArrayLike, y=None, sample_weight: ArrayLike | None = None):
        """Fit, then the labels of ``X`` under the fitted posterior (N,), as
        ``fit(X).predict(X)`` (chunk by chunk for data read by chunks)."""
        if reads_by_chunks(X, self.chunk_size):
            self._fit_chunks(X, sample_weight)
            source = chunk_source(X, None, None, self.chunk_size)
            labels = [self.predict(x) for x, _ in source if np.shape(x)[0]]
            return np.concatenate(labels)
        X = self._fit(X, sample_weight)
        return self._log_resp(X)[1].argmax(axis=1)

    def _fit(self, X, sample_weight) -> np.ndarray:
        layout = self._check_parameters()
        X = validate_data(self, X, reset=True, ensure_min_samples=2)
        X = X.astype(jax.dtypes.canonicalize_dtype(X.dtype))
        n_samples = X.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {n_samples}"
            )
        weight = self._check_sample_weight(sample_weight, n_samples, X.dtype)
        config = self._config(layout)
        prior = self._check_priors(variational.data_moments(X, weight), X.dtype, config)
        reg_covar, seed = float(self.reg_covar), self._seed()

        def start(restart):
            return variational.restart_start(
                seed, X, weight, prior, reg_covar, config, self.init_params, restart
            )

        sharded = {} if self.devices is None else {"devices": self.devices}
        driver = variational.fit if self.devices is None else variational.fit_sharded

        def run(start, bound0):
            state, converged, history = driver(
                start,
                X,
                weight,
                prior,
                reg_covar,
                float(self.tol),
                config,
                max_iter=int(self.max_iter),
                lower_bound0=bound0,
                **sharded,
            )
            history = [float(b) for b in np.asarray(history)[: int(state.n_iter)]]
            return state.parameters, history, bool(converged)

        self._fit_restarts(start, run, X.dtype)
        return X

    def _fit_chunks(self, X, sample_weight) -> None:
        """The fit of data read by chunks: one pass for the priors and the
        initialization sample, then one pass per iteration."""
        layout = self._check_parameters()
        if self.devices is not None:
            raise ValueError(
                f"devices={self.devices!r} splits an in-memory array over devices, but X "
                f"({type(X).__name__}) is read by chunks; load it with np.asarray(X) to "
                "use devices, or leave devices=None to fit it chunk by chunk."
            )
        check_rereadable(X)
        source = chunk_source(X, sample_weight, None, self.chunk_size)
        config = self._config(layout)
        seed = self._seed()
        first = chunked.variational_survey(
            source, n_components=int(self.n_components), init_rows=DEFAULT_INIT_ROWS, seed=seed
        )
        survey = first.survey
        if hasattr(self, "n_features_in_") and self.warm_start and hasattr(self, "converged_"):
            if survey.n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {survey.n_features} features, but {type(self).__name__} is "
                    f"expecting {self.n_features_in_} features as input."
                )
        self.n_features_in_ = int(survey.n_features)
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        prior = self._check_priors((first.mean, first.covariance), survey.dtype, config)
        reg_covar = float(self.reg_covar)

        def start(restart):
            return variational.restart_start(
                seed,
                survey.sample,
                survey.sample_weight,
                prior,
                reg_covar,
                config,
                self.init_params,
                restart,
            )

        def run(start, bound0):
            return chunked.fit_variational_chunked(
                source,
                first,
                start,
                prior,
                reg_covar,
                float(self.tol),
                config,
                max_iter=int(self.max_iter),
                lower_bound0=bound0,
            )

        self._fit_restarts(start, run, survey.dtype)

    def _config(self, layout: str) -> variational.VariationalConfig:
        return variational.VariationalConfig(
            int(self.n_components), layout, self.weight_concentration_prior_type
        )

    def _seed(self):
        return seed_from_random_state(self.random_state) if self._initializes() else 0

    def _initializes(self) -> bool:
        return not (self.warm_start and hasattr(self, "converged_"))

    def _fit_restarts(self, start, run, dtype) -> None:
        """Keep the best of ``n_init`` runs: ``start(restart)`` the first posterior,
        ``run(start, bound0)`` -> (posterior, lower bounds, converged)."""
        do_init = self._initializes()
        n_init = int(self.n_init) if do_init else 1
        best = None
        for restart in range(n_init):
            started = time.perf_counter()
            if do_init:
                first, bound0 = start(restart), -np.inf
            else:
                first, bound0 = self._posterior(dtype), self.lower_bound_
            if self.max_iter == 0:
                result = (first, bound0, 0, False, [])
            else:
                parameters, history, converged = run(first, bound0)
                result = (parameters, history[-1], len(history), converged, history)
            self._print_verbose(restart, result, time.perf_counter() - started)
            if best is None or result[1] > best[1] or best[1] == -np.inf:
                best = result
        parameters, bound, n_iter, converged, history = best
        self._set_posterior(parameters)
        self.converged_ = converged
        self.n_iter_ = n_iter
        self.lower_bound_ = bound
        self.lower_bounds_ = history
        if not converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                convergence_warning_class(),
                stacklevel=4,
            )

    def _print_verbose(self, restart, result, seconds) -> None:
        if self.verbose < 1:
            return
        _, bound, _, converged, history = result
        print(f"Initialization {restart}")
        if self.verbose >= 2:
            previous = -np.inf
            for iteration, value in enumerate(history, start=1):
                if iteration % self.verbose_interval == 0:
                    print(f"  Iteration {iteration}\t ll change {value - previous:.5f}")
                previous = value
        status = "converged" if converged else "did not converge"
        print(f"Initialization {status}. time lapse {seconds:.5f}s\t lower bound {bound:.5f}.")

    def _set_posterior(self, parameters: variational.VariationalParameters) -> None:
        layout = variational.variational_layout(self.covariance_type)
        values = [np.asarray(value) for value in parameters]
        concentration, mean_precision, means, degrees, covariances, factor = values
        if self.weight_concentration_prior_type == "dirichlet_process":
            self.weight_concentration_ = (concentration[0], concentration[1])
        else:
            self.weight_concentration_ = concentration
        self.weights_ = np.asarray(
            variational.weights_of(concentration, self.weight_concentration_prior_type)
        )
        self.mean_precision_ = mean_precision
        self.means_ = means
        self.degrees_of_freedom_ = float(degrees) if layout == "tied" else degrees
        self.covariances_ = covariances
        self.precisions_cholesky_ = factor
        if layout in ("full", "tied"):
            self.precisions_ = factor @ np.swapaxes(factor, -1, -2)
        else:
            self.precisions_ = factor**2

    def _posterior(self, dtype) -> variational.VariationalParameters:
        concentration = np.asarray(self.weight_concentration_, dtype)
        return variational.VariationalParameters(
            concentration,
            np.asarray(self.mean_precision_, dtype),
            np.asarray(self.means_, dtype),
            np.asarray(self.degrees_of_freedom_, dtype),
            np.asarray(self.covariances_, dtype),
            np.asarray(self.precisions_cholesky_, dtype),
        )

    # -- prediction ----------------------------------------------------------------------

    def _log_resp(self, X: np.ndarray):
        """(N,) log normalizers and (N, K) log responsibilities of the variational E-step."""
        dtype = self.means_.dtype
        config = variational.VariationalConfig(
            int(self.n_components),
            variational.variational_layout(self.covariance_type),
            self.weight_concentration_prior_type,
        )
        norm, log_resp = _log_responsibilities(
            self._posterior(dtype), X.astype(dtype), config=config
        )
        # in X's dtype (a float64 constant of the E-step promotes float32 under x64)
        return np.asarray(norm, dtype), np.asarray(log_resp, dtype)

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False)

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """(N,) :math:`\\log \\sum_k \\exp(\\mathbb{E}[\\log \\pi_k] + \\mathbb{E}[\\log
        \\mathcal{N}(x_n \\mid \\mu_k, \\Lambda_k^{-1})])`, scikit-learn's
        ``score_samples`` of this estimator (not a predictive density)."""
        return self._log_resp(self._validated(X))[0]

    def score(self, X: ArrayLike, y=None) -> float:
        """Mean of :meth:`score_samples`."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """(N,) the component of largest responsibility."""
        return self._log_resp(self._validated(X))[1].argmax(axis=1)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """(N, K) responsibilities."""
        return np.exp(self._log_resp(self._validated(X))[1])

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw from the mixture of ``weights_``, ``means_`` and ``covariances_``
        (scikit-learn's algorithm and random stream).

        Returns:
            X (n_samples, D) and the component labels (n_samples,).
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample."
            )
        n_features = self.means_.shape[1]
        rng = numpy_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_.astype(np.float64))
        means = self.means_.astype(np.float64)
        covariances = np.asarray(self.covariances_, np.float64)
        layout = variational.variational_layout(self.covariance_type)
        if layout == "full":
            parts = [
                rng.multivariate_normal(m, c, int(n))
                for m, c, n in zip(means, covariances, counts, strict=True)
            ]
        elif layout == "tied":
            parts = [
                rng.multivariate_normal(m, covariances, int(n))
                for m, n in zip(means, counts, strict=True)
            ]
        else:
            parts = [
                m + rng.standard_normal(size=(n, n_features)) * np.sqrt(c)
                for m, c, n in zip(means, covariances, counts, strict=True)
            ]
        labels = np.concatenate([np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts)])
        return np.vstack(parts).astype(self.means_.dtype), labels

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
        weight_threshold: float = 0.01,
        nuts_options=None,
    ):
        """NUTS posterior of this model as a NumPyro program, started from the fit.

        ``weight_concentration_prior_type`` picks the program: "dirichlet_process"
        (truncated stick-breaking) or "dirichlet_distribution"; the hyperparameters are
        the ``*_prior_`` attributes. The ``posterior`` group holds the number of occupied
        components per draw, ``occupied_components``, and ``weighted_components``
        (weights above ``weight_threshold``); ``nuts_options`` (``target_accept_prob``,
        0.95 by default here, ``max_tree_depth``, ``dense_mass``) go to NUTS; see
        :func:`gaussmix._dirichlet_posterior.sample_posterior`.
        """
        from gaussmix._dirichlet_posterior import sample_posterior

        return sample_posterior(
            self,
            X,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            random_state=random_state,
            progress_bar=progress_bar,
            sample_weight=sample_weight,
            weight_threshold=weight_threshold,
            nuts_options=nuts_options,
        )


def _finite_array(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"The parameter {name!r} contains NaN or infinity; give finite values.")
    return array


def _checked_covariance_prior(value, layout: str, n_features: int):
    """scikit-learn's ``_checkcovariance_prior_parameter`` for a user's prior."""
    if layout == "spherical":
        if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0.0:
            raise ValueError(
                "The parameter 'spherical covariance_prior' should be greater than 0., but "
                f"got {value!r}."
            )
        return float(value)
    array = _finite_array(value, "covariance_prior")
    expected = (n_features,) if layout == "diag" else (n_features, n_features)
    if array.shape != expected:
        raise ValueError(
            f"The parameter '{layout} covariance_prior' should have the shape of "
            f"{expected}, but got {array.shape}"
        )
    if layout == "diag":
        if (array <= 0).any():
            raise ValueError(
                "'diag covariance_prior' should be positive: every variance of the prior "
                "must be > 0."
            )
        return array
    symmetric = np.allclose(array, array.T)
    if not symmetric or np.linalg.eigvalsh(array).min() <= 0:
        raise ValueError(
            f"'{layout} covariance_prior' should be symmetric, positive-definite: a "
            "covariance matrix (e.g. a multiple of the data's covariance)."
        )
    return array

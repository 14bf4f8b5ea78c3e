"""Renamed keyword arguments: the old spelling keeps working for one release, with a warning.

Names agree across gaussmix's API: the estimators (:class:`gaussmix.GaussianMixture`,
:class:`gaussmix.KMeans`) use scikit-learn's (``max_iter``, ``tol``, ``random_state``);
the functions (``fit_em*``, ``fit_peaks``, ``fit_map``, ``select_*``, ``sample*``) use
``max_iter``, ``tol`` and ``seed``. A function that renamed a keyword keeps the old one in
its signature with the default :data:`UNSET` and resolves the pair with
:func:`renamed_keyword`.
"""

import warnings
from typing import Any

__all__ = ["UNSET", "renamed_keyword"]


class _Unset:
    """Type of :data:`UNSET`: the default of a deprecated keyword nobody passed."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unset>"

    def __reduce__(self):
        return (_Unset, ())


#: Default of a deprecated keyword: tells "not given" apart from any value.
UNSET: Any = _Unset()


def renamed_keyword(
    function: str,
    old_name: str,
    old_value: Any,
    new_name: str,
    new_value: Any,
    new_default: Any,
    *,
    stacklevel: int = 3,
) -> Any:
    """The value of a renamed keyword, warning when the old spelling was used.

    Args:
        function: the public function's name, for the messages.
        old_name: the keyword's old spelling (its default must be :data:`UNSET`).
        old_value: what the caller passed for ``old_name``.
        new_name: the keyword's new spelling.
        new_value: what the caller passed for ``new_name``.
        new_default: the default of ``new_name`` in the signature.
        stacklevel: where the warning points; 3 is the caller of ``function``.

    Returns:
        ``new_value`` when ``old_name`` was not given, else ``old_value``.

    Raises:
        ValueError: both spellings were given with different values.

    Warns:
        FutureWarning: ``old_name`` was given.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_keyword("fit", "max_iterations", 50, "max_iter", 200, 200)
        50
        >>> str(caught[0].message)
        "fit: 'max_iterations' is deprecated and will be removed in a future release; use 'max_iter' instead."
    """
    if old_value is UNSET:
        return new_value
    if new_value is not new_default and new_value != new_default and new_value != old_value:
        raise ValueError(
            f"{function}: got both '{new_name}'={new_value!r} and its deprecated spelling "
            f"'{old_name}'={old_value!r}; pass only '{new_name}'."
        )
    warnings.warn(
        f"{function}: '{old_name}' is deprecated and will be removed in a future release; "
        f"use '{new_name}' instead.",
        FutureWarning,
        stacklevel=stacklevel,
    )
    return old_value

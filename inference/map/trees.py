"""NumPyro distributions as pytrees that flatten the same way in every process.

A NumPyro distribution flattens its fields in the order of a Python ``set``
(``Distribution.gather_pytree_data_fields``), which changes with the string hash seed
from one process to the next. Priors carried through a compiled loop, or passed to it,
then give a differently ordered program in every process, and a persistent compilation
cache keyed by the program never hits. :class:`CanonicalDistribution` wraps a
distribution and flattens its fields sorted by name; :func:`canonical` wraps every
distribution of a pytree and :func:`plain` unwraps them. Neither imports NumPyro: a tree
holds a distribution only once the caller has imported it.
"""

import sys
from typing import Any

import jax

__all__ = ["CanonicalDistribution", "canonical", "plain"]


@jax.tree_util.register_pytree_node_class
class CanonicalDistribution:
    """A NumPyro distribution whose fields flatten sorted by name (nested ones too).

    Attributes:
        distribution: the wrapped distribution.
    """

    def __init__(self, distribution: Any):
        self.distribution = distribution

    def tree_flatten(self) -> tuple[tuple, tuple]:
        fn = self.distribution
        kind = type(fn)
        data_names = tuple(sorted(kind.gather_pytree_data_fields()))
        aux_names = tuple(sorted(kind.gather_pytree_aux_fields()))
        children = tuple(_wrap(fn.__dict__.get(name)) for name in data_names)
        aux_values = tuple(fn.__dict__.get(name) for name in aux_names)
        return children, (kind, data_names, aux_names, aux_values)

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> "CanonicalDistribution":
        kind, data_names, aux_names, aux_values = aux
        data = dict(zip(data_names, children, strict=True))
        extra = dict(zip(aux_names, aux_values, strict=True))
        values = tuple(_unwrap(data[name]) for name in kind.gather_pytree_data_fields())
        aux_in_order = tuple(extra[name] for name in kind.gather_pytree_aux_fields())
        return cls(kind.tree_unflatten(aux_in_order, values))


def _is_distribution(value: Any) -> bool:
    distributions = sys.modules.get("numpyro.distributions")
    return distributions is not None and isinstance(value, distributions.Distribution)


def _wrap(value: Any) -> Any:
    return CanonicalDistribution(value) if _is_distribution(value) else value


def _unwrap(value: Any) -> Any:
    return value.distribution if isinstance(value, CanonicalDistribution) else value


def canonical(tree: Any) -> Any:
    """``tree`` with every NumPyro distribution in it wrapped in
    :class:`CanonicalDistribution`.

    Example:
        >>> import numpyro.distributions as dist
        >>> tree = canonical({"a": dist.Uniform(0.0, 2.0)})
        >>> # fields sorted by name: _support (its bounds), high, low
        >>> [float(leaf) for leaf in jax.tree.leaves(tree)]
        [0.0, 2.0, 2.0, 0.0]
    """
    return jax.tree.map(_wrap, tree, is_leaf=_is_distribution)


def plain(tree: Any) -> Any:
    """``tree`` with every :class:`CanonicalDistribution` unwrapped (inverse of
    :func:`canonical`)."""
    return jax.tree.map(_unwrap, tree, is_leaf=lambda node: isinstance(node, CanonicalDistribution))

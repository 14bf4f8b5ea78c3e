"""Across processes (``jax.distributed``): exact sums and broadcasts of host arrays.

With one process every function is the identity; with several, arrays travel as raw
bytes, so float64 sums are bit-exact and the same on every process.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["broadcast_from_first", "process_gather", "process_sum"]


def process_gather(array: np.ndarray) -> np.ndarray:
    """(P, ...) the same-shaped arrays of all processes, bit-exact (float64 included)."""
    array = np.ascontiguousarray(array)
    if jax.process_count() == 1:
        return array[None]
    from jax.experimental import multihost_utils

    raw = array.reshape(-1).view(np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(raw))
    return gathered.view(array.dtype).reshape(jax.process_count(), *array.shape)


def process_sum(tree):
    """Sum of a pytree of host arrays over processes, in float64, the same on each."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda leaf: process_gather(np.asarray(leaf)).sum(axis=0), tree)


def broadcast_from_first(tree):
    """Process 0's pytree of arrays on every process (the initialization)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    host = [np.ascontiguousarray(np.asarray(leaf)) for leaf in leaves]
    raw = multihost_utils.broadcast_one_to_all([leaf.reshape(-1).view(np.uint8) for leaf in host])
    leaves = [
        jnp.asarray(np.asarray(r).view(leaf.dtype).reshape(leaf.shape))
        for r, leaf in zip(raw, host, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)

"""The batch loop's record of a finished spectrum, gathered from the packed state
(:func:`gaussmix.inference.map.batch.packed_record`), against the record raveled field by
field."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gaussmix.inference.map.batch import Finished, packed_record
from gaussmix.inference.map.levenberg_marquardt import MAPInfo, map_init
from gaussmix.inference.map.problem import MAPProblem, Sites


def random_like(leaf, rng):
    """An array of the leaf's shape and dtype, with values that differ field to field."""
    shape, dtype = np.shape(leaf), leaf.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(rng.normal(size=shape), dtype)
    return jnp.asarray(rng.integers(0, 2, size=shape)).astype(dtype)


def test_the_gathered_record_is_the_raveled_record():
    """Every field of the record, the state's and the info's, in ravel_pytree's layout:
    a field added to MAPPoint, MAPState or Finished, or one reordered, fails here."""
    sites = Sites(("height", "center", "width", "noise"), ((), (2,), (), ()), 3)
    problem = MAPProblem(None, sites, "y", None, jnp.zeros(7), jnp.zeros(7), {})
    template = map_init(jnp.ones(4), jnp.ones(()), problem)
    leaves, structure = jax.tree.flatten(template)
    rng = np.random.default_rng(0)
    state = jax.tree.unflatten(structure, [random_like(leaf, rng) for leaf in leaves])
    info = MAPInfo(
        accepted=jnp.asarray(True),
        converged=jnp.asarray(False),
        done=jnp.asarray(True),
        started=jnp.asarray(True),
        support=jnp.asarray([True, False, True, True]),
    )
    record = packed_record(template)(ravel_pytree(state)[0], info)
    expected = ravel_pytree(Finished.from_step(state, info))[0]
    assert record.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(record), np.asarray(expected))

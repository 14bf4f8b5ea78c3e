"""The batch loop's flat layouts against ``ravel_pytree``: the record of a finished
spectrum gathered from the packed state (:func:`gaussmix.inference.map.batch.packed_record`),
and a spectrum's data row with its scalars stacked by eights
(:func:`gaussmix.inference.map.batch.ravel_for_xla`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gaussmix.inference.map.batch import Finished, packed_record, ravel_for_xla
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


@pytest.mark.parametrize("n_scalars", [1, 8, 9, 17, 64, 65, 95, 600])
def test_ravel_for_xla_is_ravel_pytree(n_scalars):
    """Runs of scalar leaves of every length (one stack, stacks of stacks, padding), between
    vectors, a matrix and a boolean: the same vector as ravel_pytree, element for element."""
    scalars = [jnp.asarray(0.5 * i) for i in range(n_scalars)]
    tree = (
        jnp.arange(5.0),
        scalars,
        {"matrix": jnp.ones((2, 3)), "more": [jnp.asarray(-1.0 - i) for i in range(n_scalars)]},
        jnp.asarray(True),
    )
    expected = ravel_pytree(tree)[0]
    raveled = ravel_for_xla(tree)
    assert raveled.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(raveled), np.asarray(expected))

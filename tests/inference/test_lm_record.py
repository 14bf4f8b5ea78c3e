"""The batch loop's flat layouts against ``ravel_pytree``: the record of a finished
spectrum gathered from the packed state (:func:`gaussmix.inference.map.batch.packed_record`),
and a spectrum's data row with its scalars stacked by eights
(:func:`gaussmix.inference.map.batch.ravel_for_xla`), and the row of a finished spectrum's
results (:func:`gaussmix.inference.map.batch.finish`) read back field by field; a batch of one
traced without vmap (:func:`gaussmix.inference.map.problem.vmap_unless_one`); the accepted
point selected in the raveled state, as :func:`~gaussmix.inference.map.levenberg_marquardt.map_step`
selects it field by field."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gaussmix.inference.map import levenberg_marquardt as lm
from gaussmix.inference.map.batch import (
    BatchOutputs,
    Finished,
    finish,
    fit_batch,
    packed_record,
    ravel_for_xla,
)
from gaussmix.inference.map.families import FAMILIES
from gaussmix.inference.map.levenberg_marquardt import MAPInfo, map_init
from gaussmix.inference.map.problem import MAPProblem, Sites, vmap_unless_one
from gaussmix.models.peaks import peak_model, peaks


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


def line(x, y=None):
    """y = slope x + Normal(0, noise): one curve parameter and a noise site."""
    import numpyro
    import numpyro.distributions as dist

    slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
    noise = numpyro.sample("noise", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(slope * x, noise), obs=y)


@pytest.mark.parametrize("started", [True, False])
def test_the_finished_row_names_every_field(started):
    """finish's row read back by BatchOutputs.from_rows: each field where it was written
    (the flags and counts as they were, the rest NaN after a failed start), whichever
    order BatchOutputs lists its fields in."""
    x = jnp.linspace(0.0, 1.0, 5)
    y = 2.0 * x + jnp.asarray([0.1, -0.1, 0.05, 0.0, -0.05])
    sites = Sites(("slope", "noise"), ((), ()), 1)
    family = FAMILIES["normal"]
    problem = MAPProblem(line, sites, "y", family, x, y, {}).with_priors(jnp.ones(1), jnp.ones(()))
    template = map_init(jnp.ones(1), jnp.ones(()), problem)
    curvature = jnp.asarray([[4.0]])
    state = Finished.from_step(
        template._replace(
            point=template.point._replace(
                params=jnp.asarray([2.0]), noise=jnp.asarray(0.5), curvature=curvature,
                prior_hessian=jnp.asarray([[-0.01]]),
                rss=jnp.asarray(0.03), n_points=jnp.asarray(5.0), decrement=jnp.asarray(1e-9),
            ),
            n_iter=jnp.asarray(7, jnp.int32),
        ),
        MAPInfo(*(jnp.asarray(True),) * 3, jnp.asarray(started), jnp.asarray([True, False])),
    )  # fmt: skip
    row = np.asarray(finish(problem, state))[None]
    outputs = BatchOutputs.from_rows(row, n_params=1, n_sites=2)
    assert sorted(outputs._fields) == sorted(BatchOutputs._fields)
    assert outputs.n_iter.tolist() == [7] and outputs.n_iter.dtype == np.int32
    assert outputs.support.tolist() == [[True, False]]
    assert outputs.started.tolist() == [started]
    assert outputs.converged.tolist() == [started]
    assert outputs.n_points.tolist() == [5.0]
    unknown = (outputs.theta, outputs.noise, outputs.covariance, outputs.objective,
               outputs.log_likelihood, outputs.rss, outputs.decrement)  # fmt: skip
    if not started:
        assert all(np.isnan(field).all() for field in unknown)
        return
    assert outputs.theta.tolist() == [[2.0]] and outputs.noise.tolist() == [0.5]
    assert outputs.rss.tolist() == [0.03] and outputs.decrement.tolist() == [1e-9]
    # curve_fit's pcov, s^2 (J^T J - s^2 prior Hessian)^{-1} with s^2 = RSS / (n - p) and
    # J^T J = curvature + sigma^2 prior Hessian
    variance = 0.03 / (5 - 1)
    expected = variance / (4.0 + 0.25 * -0.01 - variance * -0.01)
    np.testing.assert_allclose(outputs.covariance[0, 0, 0], expected, rtol=1e-12)
    log_likelihood = np.sum(-0.5 * ((np.asarray(y) - 2.0 * np.asarray(x)) / 0.5) ** 2
                            - np.log(0.5) - 0.5 * np.log(2 * np.pi))  # fmt: skip
    np.testing.assert_allclose(outputs.log_likelihood[0], log_likelihood, rtol=1e-6)


@pytest.mark.parametrize("length", [1, 3])
def test_vmap_unless_one_is_vmap(length):
    """A batch of one traced without vmap gives what vmap gives, shapes and values, with
    a None argument and a tuple of outputs; a longer batch is vmap's."""

    def fn(matrix, vector, nothing):
        assert nothing is None
        return matrix @ vector, {"total": jnp.sum(vector), "flag": vector[0] > 0}

    rng = np.random.default_rng(length)
    matrix = jnp.asarray(rng.normal(size=(length, 3, 2)))
    vector = jnp.asarray(rng.normal(size=(length, 2)))
    expected = jax.vmap(fn)(matrix, vector, None)
    got = vmap_unless_one(fn)(matrix, vector, None)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_batch_keeps_the_points_map_step_keeps():
    """fit_batch selects the accepted point in the raveled state (map_propose, then one
    select); a plain loop of map_step (keep_accepted, a select per field) takes the same
    steps from the same starts: the same trial and accepted steps, parameters and RSS, on
    spectra whose fits reject steps (starts 30 % off) and with slots refilled."""
    model = peak_model(("gaussian",) * 2, "linear")
    program = functools.partial(
        peaks, lineshapes=("gaussian",) * 2, baseline="linear", likelihood="normal", ties={}
    )
    noise_index = model.site_names.index("sigma")
    sites = Sites(model.site_names, tuple(() for _ in model.site_names), noise_index)
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 10.0, 120)
    truth = np.column_stack(
        [rng.uniform(2, 4, 5), rng.uniform(2, 4, 5), rng.uniform(0.4, 0.8, 5),
         rng.uniform(2, 4, 5), rng.uniform(6, 8, 5), rng.uniform(0.4, 0.8, 5),
         rng.uniform(0, 1, 5), rng.uniform(-0.1, 0.1, 5)]
    )  # fmt: skip
    y = truth[:, 6:7] + truth[:, 7:8] * x
    for k in range(2):
        h, c, w = (truth[:, 3 * k + i, None] for i in range(3))
        y = y + h * np.exp(-0.5 * ((x - c) / w) ** 2)
    y = y + 0.05 * rng.normal(size=y.shape)
    start = truth * (1 + rng.uniform(-0.3, 0.3, truth.shape))
    noise = np.full(5, 0.2)
    settings = lm.MAPSettings(np.asarray(1e-10), np.asarray(1e-10), np.asarray(100, np.int32))
    family = FAMILIES["normal"]
    batch = fit_batch(None, program, sites, "y", family, 2, x, y, None, np.ones(5, bool),
                      start, noise, {}, settings)  # fmt: skip

    def one(y_one, theta, noise_one):
        problem = MAPProblem(program, sites, "y", family, jnp.asarray(x), y_one, {})
        problem = problem.with_priors(theta, noise_one)

        def body(carry):
            state, _ = carry
            state, info = lm.map_step(state, problem, settings)
            return state, info.done

        initial = (lm.map_init(theta, noise_one, problem), False)
        state, _ = jax.lax.while_loop(lambda carry: ~carry[1], body, initial)
        return state.point.params, state.point.rss, state.n_iter, state.n_accepted

    params, rss, n_iter, n_accepted = jax.jit(jax.vmap(one))(y, start, noise)
    assert np.sum(np.asarray(n_accepted) < np.asarray(n_iter)) >= 2  # steps were rejected
    np.testing.assert_array_equal(batch.n_iter, np.asarray(n_iter))
    np.testing.assert_allclose(batch.theta, np.asarray(params), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batch.rss, np.asarray(rss), rtol=1e-10)

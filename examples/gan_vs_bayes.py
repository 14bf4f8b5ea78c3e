"""A small GAN in JAX versus the Bayesian answer, learning N(3, 1) from data.

The generator maps N(0, 1) noise through an MLP; the discriminator is an MLP too. They
play the non-saturating GAN game with Adam (written out here: a NamedTuple state and a
pure update), three discriminator steps per generator step, an R1 gradient penalty on
real data (Mescheder et al. 2018) and an exponential moving average of the generator's
weights, whose samples are reported. The whole training is one ``jax.jit(lax.scan)``.

Beside it: the Bayesian answer to the same question, a Normal model with unknown mean and
sd fitted by NUTS (``gaussmix.inference.sample``), its posterior predictive, and a
Gaussian mixture density (``gaussmix.GaussianMixture``, K chosen by BIC). Printed: the
moments of every answer and its Wasserstein-1 and Kolmogorov-Smirnov distance to the
target N(3, 1); asserted: the GAN reaches mean 3 +- 0.2 and sd 1 +- 0.2 (+- 0.4 in
``--quick``), and the posterior covers the data's mean and sd.

Run: python examples/gan_vs_bayes.py [--quick] [--out DIR]
"""

import argparse
import math
from pathlib import Path
from statistics import NormalDist
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
from matplotlib.figure import Figure

import gaussmix
from gaussmix import plots

jax.config.update("jax_enable_x64", True)  # float64 on CPU, before any array is made
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
DPI = 80
TARGET_MEAN, TARGET_SD = 3.0, 1.0


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: runs in seconds")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "out", help="folder for the PNG figures (default: out/)"
    )
    return parser.parse_args()


def save(figure: Figure, out: Path, name: str) -> None:
    path = out / name
    figure.savefig(path, dpi=DPI)
    print(f"wrote {path}")


# --- Adam, written out -------------------------------------------------------------------


class AdamState(NamedTuple):
    step: jax.Array
    first_moment: list
    second_moment: list


def adam_init(parameters) -> AdamState:
    zeros = jax.tree.map(jnp.zeros_like, parameters)
    return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)


def adam_update(
    parameters, gradient, state: AdamState, learning_rate: float, beta1=0.5, beta2=0.999
):
    """One Adam step (Kingma & Ba 2015) with bias correction; beta1 = 0.5 as usual for GANs."""
    step = state.step + 1
    first = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * g, state.first_moment, gradient)
    second = jax.tree.map(
        lambda v, g: beta2 * v + (1 - beta2) * g**2, state.second_moment, gradient
    )
    first_correction, second_correction = 1 - beta1**step, 1 - beta2**step
    parameters = jax.tree.map(
        lambda p, m, v: (
            p - learning_rate * (m / first_correction) / (jnp.sqrt(v / second_correction) + 1e-8)
        ),
        parameters,
        first,
        second,
    )
    return parameters, AdamState(step, first, second)


# --- the GAN -----------------------------------------------------------------------------


def mlp_init(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """He-initialized weights and zero biases of an MLP with layer sizes ``sizes``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in), jnp.zeros(n_out))
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(parameters, x: jax.Array) -> jax.Array:
    """x: (B, 1) -> (B, 1), leaky-ReLU hidden layers, linear output."""
    for weight, bias in parameters[:-1]:
        x = jax.nn.leaky_relu(x @ weight + bias, 0.2)
    weight, bias = parameters[-1]
    return x @ weight + bias


class GANState(NamedTuple):
    generator: list
    discriminator: list
    generator_optimizer: AdamState
    discriminator_optimizer: AdamState
    generator_average: list


class GANInfo(NamedTuple):
    discriminator_loss: jax.Array
    generator_loss: jax.Array
    sample_mean: jax.Array
    sample_sd: jax.Array


class GANSettings(NamedTuple):
    batch_size: int = 128
    learning_rate: float = 1e-3
    discriminator_steps: int = 3
    gradient_penalty: float = 1.0
    average_decay: float = 0.999


def discriminator_loss(discriminator, generator, real, noise, gradient_penalty):
    """-log D(real) - log(1 - D(fake)) + gamma/2 E|d logit / dx|^2 on real points (R1)."""
    fake = mlp(generator, noise)
    slope = jax.vmap(jax.grad(lambda point: mlp(discriminator, point[None, None])[0, 0]))(
        real[:, 0]
    )
    return (
        jnp.mean(jax.nn.softplus(-mlp(discriminator, real)))
        + jnp.mean(jax.nn.softplus(mlp(discriminator, fake)))
        + 0.5 * gradient_penalty * jnp.mean(slope**2)
    )


def generator_loss(generator, discriminator, noise):
    """Non-saturating generator loss -log D(G(z))."""
    return jnp.mean(jax.nn.softplus(-mlp(discriminator, mlp(generator, noise))))


def gan_step(state: GANState, key: jax.Array, data: jax.Array, settings: GANSettings):
    """Pure step: ``discriminator_steps`` discriminator updates, then one generator update."""
    discriminator_keys, generator_key, probe_key = jnp.split(
        jax.random.split(key, settings.discriminator_steps + 2), [settings.discriminator_steps, -1]
    )

    def discriminator_step(carry, step_key):
        # One compiled step, scanned: the program holds it once, not once per step.
        discriminator, optimizer = carry
        rows_key, noise_key = jax.random.split(step_key)
        rows = jax.random.randint(rows_key, (settings.batch_size,), 0, data.shape[0])
        noise = jax.random.normal(noise_key, (settings.batch_size, 1))
        d_value, gradient = jax.value_and_grad(discriminator_loss)(
            discriminator, state.generator, data[rows][:, None], noise, settings.gradient_penalty
        )
        return adam_update(discriminator, gradient, optimizer, settings.learning_rate), d_value

    (discriminator, optimizer), d_values = jax.lax.scan(
        discriminator_step, (state.discriminator, state.discriminator_optimizer), discriminator_keys
    )
    d_value = d_values[-1]
    noise = jax.random.normal(generator_key[0], (settings.batch_size, 1))
    g_value, gradient = jax.value_and_grad(generator_loss)(state.generator, discriminator, noise)
    generator, generator_optimizer = adam_update(
        state.generator, gradient, state.generator_optimizer, settings.learning_rate
    )
    decay = settings.average_decay
    average = jax.tree.map(
        lambda a, p: decay * a + (1 - decay) * p, state.generator_average, generator
    )
    probe = mlp(average, jax.random.normal(probe_key[0], (512, 1)))
    info = GANInfo(d_value, g_value, probe.mean(), probe.std())
    return GANState(generator, discriminator, generator_optimizer, optimizer, average), info


def train_gan(data: np.ndarray, n_steps: int, seed: int, settings: GANSettings):
    """Train from scratch; returns the final state and the per-step GANInfo (n_steps,)."""
    generator_key, discriminator_key, steps_key = jax.random.split(jax.random.key(seed), 3)
    generator = mlp_init(generator_key, [1, 32, 32, 1])
    discriminator = mlp_init(discriminator_key, [1, 32, 32, 1])
    state = GANState(
        generator, discriminator, adam_init(generator), adam_init(discriminator), generator
    )

    @jax.jit
    def run(state, keys, data):
        return jax.lax.scan(lambda s, k: gan_step(s, k, data, settings), state, keys)

    return run(state, jax.random.split(steps_key, n_steps), jnp.asarray(data))


# --- the Bayesian answer -----------------------------------------------------------------


def normal_model(x=None):
    """x_n ~ Normal(mean, sd) with mean ~ Normal(0, 10), sd ~ HalfNormal(10)."""
    mean = numpyro.sample("mean", dist.Normal(0.0, 10.0))
    sd = numpyro.sample("sd", dist.HalfNormal(10.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(mean, sd), obs=x)


# --- distances to the target -------------------------------------------------------------


def target_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)((x - TARGET_MEAN) / (TARGET_SD * math.sqrt(2.0))))


def wasserstein_to_target(samples: np.ndarray) -> float:
    """W1 between the empirical law of ``samples`` and N(3, 1): mean |x_(i) - q_i|."""
    n = len(samples)
    levels = (np.arange(n) + 0.5) / n
    quantiles = np.vectorize(NormalDist(TARGET_MEAN, TARGET_SD).inv_cdf)(levels)
    return float(np.mean(np.abs(np.sort(samples) - quantiles)))


def ks_to_target(samples: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic sup |F_n - F| against N(3, 1)."""
    ordered = np.sort(samples)
    cdf = target_cdf(ordered)
    n = len(ordered)
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def main() -> None:
    args = parse_arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    n_data = 1000
    n_steps = 1000 if args.quick else 10_000
    tolerance = 0.4 if args.quick else 0.2
    data = np.random.default_rng(0).normal(TARGET_MEAN, TARGET_SD, n_data)
    print(f"data: {n_data} draws from N(3, 1): mean {data.mean():.3f}, sd {data.std(ddof=1):.3f}")

    # GAN
    # Average the generator over about the last tenth of training.
    settings = GANSettings(average_decay=1.0 - 10.0 / n_steps)
    state, info = train_gan(data, n_steps, seed=0, settings=settings)
    noise = jax.random.normal(jax.random.key(1), (20_000, 1))
    gan_samples = np.asarray(jax.jit(mlp)(state.generator_average, noise)[:, 0])
    gan_mean, gan_sd = gan_samples.mean(), gan_samples.std(ddof=1)
    print(
        f"GAN ({n_steps} generator steps, {settings.discriminator_steps} discriminator steps "
        f"each): mean {gan_mean:.3f}, sd {gan_sd:.3f}"
    )

    # Bayes: NUTS on the Normal model
    from gaussmix.inference import sample

    draws = dict(num_warmup=200, num_samples=300, num_chains=1) if args.quick else {}
    # Chains start at the maximum-likelihood answer (the sample mean and sd), which the wide
    # priors barely move, so no search for the mode is needed.
    start = {"mean": float(data.mean()), "sd": float(data.std())}
    posterior_tree = sample(
        normal_model, jnp.asarray(data), init=start, seed=0, progress_bar=False, **draws
    )
    posterior = posterior_tree["posterior"]
    mean_draws = np.asarray(posterior["mean"]).ravel()
    sd_draws = np.asarray(posterior["sd"]).ravel()
    # Posterior predictive: ten new points per posterior draw.
    predictive = (
        np.random.default_rng(2).normal(mean_draws, sd_draws, (10, mean_draws.size)).ravel()
    )
    print(
        f"posterior: mean {mean_draws.mean():.3f} +- {mean_draws.std():.3f}, "
        f"sd {sd_draws.mean():.3f} +- {sd_draws.std():.3f} ({mean_draws.size} draws)"
    )

    # A Gaussian mixture density, K by BIC
    _, mixture = gaussmix.select_components(
        data[:, None],
        n_components=range(1, 3 if args.quick else 5),
        covariance_type="full",
        criterion="bic",
    )
    mixture_samples = np.asarray(mixture.sample(20_000)[0])[:, 0]
    print(f"GMM density: K = {mixture.n_components} by BIC")

    answers = {"GAN": gan_samples, "posterior predictive": predictive, "GMM": mixture_samples}
    print(f"{'answer':<22}{'mean':>8}{'sd':>8}{'W1':>9}{'KS':>9}")
    for name, values in answers.items():
        print(
            f"{name:<22}{values.mean():8.3f}{values.std(ddof=1):8.3f}"
            f"{wasserstein_to_target(values):9.4f}{ks_to_target(values):9.4f}"
        )

    figure = Figure(figsize=(11, 4), layout="constrained")
    density_axis, trace_axis, posterior_axis = figure.subplots(1, 3)
    grid = np.linspace(-1.0, 7.0, 400)
    density_axis.plot(
        grid,
        np.exp(-0.5 * (grid - 3) ** 2) / math.sqrt(2 * math.pi),
        "k",
        lw=2,
        label="target N(3, 1)",
    )
    bins = np.linspace(-1.0, 7.0, 60)
    density_axis.hist(
        gan_samples, bins=bins, density=True, alpha=0.45, color="C1", label="GAN samples"
    )
    density_axis.hist(
        predictive,
        bins=bins,
        density=True,
        histtype="step",
        lw=1.5,
        color="C0",
        label="posterior predictive",
    )
    density_axis.plot(
        grid,
        np.exp(np.asarray(mixture.score_samples(grid[:, None]))),
        "C2--",
        label=f"GMM density (K={mixture.n_components})",
    )
    density_axis.set_title("target, GAN, Bayes, GMM")
    density_axis.set_xlabel("x")
    density_axis.legend(fontsize="small", loc="upper left")
    steps = np.arange(1, n_steps + 1)
    trace_axis.plot(steps, np.asarray(info.sample_mean), label="generated mean")
    trace_axis.plot(steps, np.asarray(info.sample_sd), label="generated sd")
    trace_axis.axhline(TARGET_MEAN, color="k", lw=0.8, ls=":")
    trace_axis.axhline(TARGET_SD, color="k", lw=0.8, ls=":")
    trace_axis.set_xlabel("generator step")
    trace_axis.set_title("GAN training (averaged generator)")
    trace_axis.legend(fontsize="small")
    posterior_axis.scatter(mean_draws, sd_draws, s=3, alpha=0.3)
    posterior_axis.plot(gan_mean, gan_sd, "C1*", ms=14, label="GAN moments")
    posterior_axis.plot(TARGET_MEAN, TARGET_SD, "k+", ms=14, label="truth")
    posterior_axis.plot(data.mean(), data.std(ddof=1), "kx", ms=10, label="data moments")
    posterior_axis.set_xlabel("mean")
    posterior_axis.set_ylabel("sd")
    posterior_axis.set_title("NUTS posterior of (mean, sd)")
    posterior_axis.legend(fontsize="small")
    save(figure, args.out, "gan_vs_bayes.png")
    trace = Figure(figsize=(8, 4), layout="constrained")
    plots.plot_trace(
        posterior_tree, var_names=["mean", "sd"], axes=trace.subplots(2, 1, sharex=True)
    )
    trace.suptitle("NUTS traces of the Normal model")
    save(trace, args.out, "gan_vs_bayes_trace.png")

    assert abs(gan_mean - TARGET_MEAN) < tolerance, (
        f"GAN mean {gan_mean:.3f} is not 3 +- {tolerance}"
    )
    assert abs(gan_sd - TARGET_SD) < tolerance, f"GAN sd {gan_sd:.3f} is not 1 +- {tolerance}"
    # The posterior must cover what the data say: 4 posterior sds around the data moments.
    assert abs(mean_draws.mean() - data.mean()) < 4 * mean_draws.std()
    assert abs(sd_draws.mean() - data.std(ddof=1)) < 4 * sd_draws.std()
    print("claims hold: GAN moments within", tolerance, "of (3, 1); posterior covers the data")


if __name__ == "__main__":
    main()

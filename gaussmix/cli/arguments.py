"""The argument parser of the ``gaussmix`` command: its options and their bounds."""

import argparse

from gaussmix.cli.errors import UsageError
from gaussmix.cli.limits import (
    MAX_CANDIDATES,
    MAX_CHAINS,
    MAX_COMPONENTS,
    MAX_DRAWS,
    MAX_PEAKS,
    MAX_RESTARTS,
    MAX_SEED,
)

_COVARIANCE_TYPES = (
    *("full", "tied", "diag", "spherical"),
    *("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV"),
    *("EVV", "VVV"),
)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _components(text: str) -> tuple[int, ...]:
    """``"3"`` -> (3,); ``"1:10"`` -> (1, ..., 10), both ends included.

    The range is checked arithmetically before it is built: at most
    ``MAX_CANDIDATES`` counts, none above ``MAX_COMPONENTS``.
    """
    parts = text.split(":")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a count K such as 3 or a range A:B such as 1:10"
        ) from None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2:
        raise argparse.ArgumentTypeError(f"invalid range {text!r}: write A:B such as 1:10")
    low, high = numbers
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: counts must be >= 1 and A <= B in A:B"
        )
    if high - low + 1 > MAX_CANDIDATES:
        raise argparse.ArgumentTypeError(
            f"invalid range {text!r}: {high - low + 1} candidate counts, at most "
            f"{MAX_CANDIDATES} (each is a separate fit); give a narrower range A:B"
        )
    if high > MAX_COMPONENTS:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: at most {MAX_COMPONENTS} components; give a smaller K"
        )
    return tuple(range(low, high + 1))


def _bounded_int(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high`` inclusive."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is too large: at most {high}")
        return value

    return convert


def _peak_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in text.split(",", MAX_PEAKS))
    if len(names) > MAX_PEAKS:
        raise argparse.ArgumentTypeError(
            f"more than {MAX_PEAKS} peaks in --peaks; fit fewer peaks at a time"
        )
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"invalid peak list {text[:60]!r}: give lineshapes separated by commas, "
            "e.g. gaussian,gaussian"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``gaussmix`` command (errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog="gaussmix",
        description="Gaussian mixtures and peak fits: EM/MAP and NUTS, with an HTML report.",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no messages on stdout"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Options every command takes; SUPPRESS keeps `gaussmix --quiet CMD` from being undone.
    common = _Parser(add_help=False)
    common.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no messages on stdout",
    )
    common.add_argument(
        "--seed",
        type=_bounded_int(0, MAX_SEED),
        default=0,
        help=f"random seed, 0 to {MAX_SEED} (default: 0)",
    )

    data = _Parser(add_help=False)
    data.add_argument("data", metavar="DATA", help="CSV file with a header row, or .npy")
    data.add_argument(
        "--drop-nan",
        action="store_true",
        help="omit rows with missing or NaN values instead of stopping",
    )
    data.add_argument("--out", required=True, metavar="DIR", help="output folder")

    sampling = _Parser(add_help=False)
    sampling.add_argument(
        "--num-warmup",
        type=_bounded_int(1, MAX_DRAWS),
        default=1000,
        metavar="N",
        help="NUTS (default: 1000)",
    )
    sampling.add_argument(
        "--num-samples",
        type=_bounded_int(1, MAX_DRAWS),
        default=1000,
        metavar="N",
        help="NUTS (default: 1000)",
    )
    sampling.add_argument(
        "--num-chains",
        type=_bounded_int(1, MAX_CHAINS),
        default=4,
        metavar="N",
        help="NUTS (default: 4)",
    )

    mixture = commands.add_parser(
        "fit-mixture",
        parents=[common, data, sampling],
        help="fit a Gaussian mixture to the rows of DATA",
        description="Fit a Gaussian mixture (EM, optionally followed by NUTS).",
    )
    mixture.add_argument(
        "--components",
        type=_components,
        required=True,
        metavar="K|A:B",
        help="number of components, or a range A:B (inclusive) to choose from",
    )
    mixture.add_argument(
        "--covariance",
        choices=_COVARIANCE_TYPES,
        default="full",
        help="full, tied, diag, spherical or one of mclust's 14 models (EM only; "
        "VVV, EEE, VVI, VII are the first four) (default: full)",
    )
    mixture.add_argument(
        "--backend",
        choices=("em", "mcmc"),
        default="em",
        help="em: point estimate; mcmc: EM, then NUTS from it (default: em)",
    )
    mixture.add_argument(
        "--criterion",
        choices=("bic", "aic", "loo"),
        default="bic",
        help="how a range of K is decided (loo fits every K by NUTS; default: bic)",
    )
    mixture.add_argument(
        "--columns", nargs="+", metavar="COL", help="columns to use (default: all)"
    )
    mixture.add_argument(
        "--n-init",
        type=_bounded_int(1, MAX_RESTARTS),
        default=1,
        metavar="N",
        help="EM restarts (default: 1)",
    )

    peaks = commands.add_parser(
        "fit-peaks",
        parents=[common, data, sampling],
        help="fit peaks on a baseline to one or several spectra",
        description="Fit a sum of peaks; several --y columns are fitted as one batch.",
    )
    peaks.add_argument("--x", required=True, metavar="COL", help="column of the x values")
    peaks.add_argument(
        "--y", required=True, nargs="+", metavar="COL", help="column(s) of the spectra"
    )
    peaks.add_argument(
        "--peaks",
        type=_peak_list,
        default=("gaussian",),
        metavar="SHAPE,...",
        help="lineshapes separated by commas (default: gaussian)",
    )
    peaks.add_argument(
        "--baseline",
        default=None,
        help="constant, linear, exponential, shirley, tougaard, a polynomial degree such as 3, "
        "or none (default)",
    )
    peaks.add_argument(
        "--backend",
        choices=("map", "mcmc"),
        default="map",
        help="map: Levenberg-Marquardt; mcmc: then NUTS per spectrum, or on the whole batch "
        "with --shared/--pooled (default: map)",
    )
    peaks.add_argument(
        "--shared",
        nargs="+",
        default=(),
        metavar="NAME",
        help="parameters with one value for all spectra, e.g. peak0_sigma (sigma: one noise "
        "scale); needs several --y columns",
    )
    peaks.add_argument(
        "--pooled",
        nargs="+",
        default=(),
        metavar="NAME",
        help="parameters drawn per spectrum from a population Normal(mu, tau): centres, "
        "heights, areas, baseline coefficients; needs several --y columns",
    )

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="the tour on the bundled datasets",
        description="EM and NUTS for mixtures, peak fits against curve_fit, model "
        "selection, and the report, on the bundled datasets.",
    )
    demo.add_argument("--out", default="demo", metavar="DIR", help="output folder (default: demo)")
    # A smaller tour for the test suite.
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    return parser

"""Bounds of the numeric options, and what the options cost in memory, checked before
anything is allocated."""

import argparse
import contextlib
import os

from gaussmix.cli.errors import UsageError

#: Largest K in --components (more is a memory and time problem long before it is useful).
MAX_COMPONENTS = 10_000


#: Most candidate counts in --components A:B: each one is a separate fit.
MAX_CANDIDATES = 1000


#: Largest number of peaks in --peaks.
MAX_PEAKS = 1000


#: Largest polynomial degree of --baseline (higher degrees are numerically meaningless).
MAX_BASELINE_DEGREE = 20


#: Largest --num-warmup and --num-samples: a million draws per chain.
MAX_DRAWS = 1_000_000


#: Largest --num-chains.
MAX_CHAINS = 1024


#: Largest --n-init (EM restarts run side by side).
MAX_RESTARTS = 1000


#: Seeds NumPy and JAX accept: 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


#: Fewest NUTS draws per chain: ArviZ's split R-hat and ESS split each chain in halves
#: and need at least 2 draws in each.
_MIN_DRAWS_PER_CHAIN = 4


#: Fewest NUTS draws in all: PSIS-LOO fits a Pareto tail to the largest fifth of the
#: importance ratios and needs at least 5 draws in it.
_MIN_DRAWS = 25


#: Copies of the largest arrays a fit holds at once (inputs, outputs, temporaries).
MEMORY_FACTOR = 4


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable on Linux), or None when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_memory(needed: float, what: str, fix: str) -> None:
    """Stop when ``needed`` bytes exceed the memory available."""
    available = available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"{what} need about {needed / 2**30:.1f} GiB of memory, more than the "
            f"{available / 2**30:.1f} GiB available; {fix}"
        )


def check_sampling(args: argparse.Namespace) -> None:
    """NUTS settings the diagnostics can use."""
    if args.num_samples < _MIN_DRAWS_PER_CHAIN:
        raise UsageError(
            f"--num-samples {args.num_samples} is too few: ArviZ's R-hat and ESS need at "
            f"least {_MIN_DRAWS_PER_CHAIN} draws per chain; use --num-samples "
            f"{_MIN_DRAWS_PER_CHAIN} or more (default 1000)"
        )
    if args.num_samples * args.num_chains < _MIN_DRAWS:
        raise UsageError(
            f"--num-samples {args.num_samples} x --num-chains {args.num_chains} = "
            f"{args.num_samples * args.num_chains} draws are too few: PSIS-LOO needs at "
            f"least {_MIN_DRAWS}; raise --num-samples or --num-chains"
        )


def draws_bytes(args: argparse.Namespace, n_values: int) -> float:
    """Bytes of ``n_values`` float64 values per draw, for every stored draw."""
    return 8.0 * args.num_samples * args.num_chains * n_values * MEMORY_FACTOR

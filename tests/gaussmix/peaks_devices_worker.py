"""Subprocess helper of test_fit_peaks.py (not collected by pytest): fit_peaks with
``devices`` on forced CPU devices, and the same fits on one device.

Several CPU devices exist only if XLA_FLAGS asks for them before JAX starts, so the test
runs this script in a fresh interpreter. Argument: the .npz file to write.
"""

import os
import sys
import warnings

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from gaussmix.peaks import fit_peaks  # noqa: E402

#: What is compared between one device and several.
FIELDS = ("rss", "converged", "n_iter", "n_points", "covariance", "bic")


def spectra():
    """Ten spectra (not a multiple of 4: two padded) of one Gaussian peak on a constant,
    one with a NaN point (nan_policy='omit': a mask split over the devices too)."""
    rng = np.random.default_rng(3)
    x = np.linspace(-5.0, 5.0, 61)
    centers = rng.uniform(-1.0, 1.0, (10, 1))
    y = 0.5 + 2.0 * np.exp(-0.5 * ((x - centers) / 0.8) ** 2) + rng.normal(0, 0.05, (10, 61))
    y[3, 7] = np.nan
    return x, y


def main() -> None:
    x, y = spectra()
    results = {"device_count": np.asarray(jax.device_count())}
    options = dict(peaks="gaussian", baseline="constant", nan_policy="omit", batch_size=2)
    # Spectra 0 and 5 start with the peak 5 widths from its data: it fades to height 0,
    # and the lost-peak refit (only those two, split over the devices) recovers it.
    centers = np.where(np.isin(np.arange(10), [0, 5]), 4.2, 0.0)
    lost = {"peak0_height": 2.0, "peak0_center": centers, "peak0_sigma": 0.5, "baseline_c0": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {
            "one": fit_peaks(x, y, **options),
            "split": fit_peaks(x, y, devices=4, **options),
            "lost_one": fit_peaks(x, y, init=lost, **options),
            "lost_split": fit_peaks(x, y, init=lost, devices=4, **options),
            "lost_first": fit_peaks(x, y, init=lost, lost_peak_retries=0, **options),
        }
    for label, fit in fits.items():
        for name in fit.parameter_names:
            results[f"{label}/params/{name}"] = np.asarray(fit.params[name])
        for field in FIELDS:
            results[f"{label}/{field}"] = np.asarray(getattr(fit, field))
    np.savez(sys.argv[1], **results)


if __name__ == "__main__":
    main()

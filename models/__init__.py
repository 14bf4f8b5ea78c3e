"""Gaussian mixture and peak models as NumPyro programs."""

"""ptv2: P-Tuning v2 experiment runner."""

__version__ = "0.1.0"

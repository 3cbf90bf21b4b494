"""Benchmarks: training speed and memory (train_speed), mixed-prompt prediction (mixed); docs/performance.md."""

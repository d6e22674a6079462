"""Benchmark scripts, each runnable as ``python -m benchmarks.<name>``."""

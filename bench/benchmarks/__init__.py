"""Benchmark scripts, each runnable as ``python -m bench.benchmarks.<name>``."""

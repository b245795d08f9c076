"""Benchmarks of the distill pipeline (``python -m benchmarks.throughput --help``); not installed with the package."""

"""Benchmarks: each starts its own real servers and processes and writes bench/results/<name>.json."""

"""Benchmarks: ``make bench`` (full) and ``make bench QUICK=1``; see bench/run.py."""

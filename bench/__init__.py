"""Benchmark harness: every server profile x three apps x worker counts, under one load generator.

Run it with `python -m bench [--quick]` (or `make bench`). It measures, it never asserts:
numbers from a shared machine are for comparing profiles side by side, not for gating CI.
"""

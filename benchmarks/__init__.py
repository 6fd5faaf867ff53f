"""Benchmarks of queued_storage against the storages it stands in front of.

Run ``python benchmarks/run.py`` from the repository root; ``--help`` lists
the options and ``docs/performance.rst`` explains the figures.
"""

"""Benchmarks: figures measured side by side in one run (`python -m benchmarks.run`; see README.md).

Timings live here, not in test asserts (STYLE.md).
"""

"""The per-request cost of this checkout against an older commit: `python -m benchmarks.commits`."""

"""Reproducible experiments on the bundled digits net: `python -m experiments.run_all` (docs/experiment.md)."""

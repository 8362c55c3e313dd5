"""Benchmarks of Quorum's own costs, each a measurement `python -m bench NAME` runs."""

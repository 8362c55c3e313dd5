"""Benchmarks of Quorum's own costs: model calls through the seam, checkpoint commits."""

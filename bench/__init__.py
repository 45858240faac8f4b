"""Benchmarks: speed, memory and agreement of the propagation paths."""

"""Benchmarks: measured numbers for the docs (accuracy, speed, memory, start-up cost)."""

"""Torch building blocks, exportable (no Lightning).

Frozen backbones and token extractors, feature aggregation,
the frequency split, export-safe ops, map smoothing and score statistics.
"""

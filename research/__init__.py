"""The lab: the tools and grids that chose the package's defaults (not installed; run from a clone's root).

Nothing in :mod:`anomalib_fewshot` imports this package; it uses the package as any user would. See README.md.
"""

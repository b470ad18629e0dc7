"""Building blocks shared by every anomalib_fewshot model.

Nothing in this package knows about a specific model: models import from here, never from each other.
"""

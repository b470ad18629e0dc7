"""The fit lifecycle every model shares.

Shot selection, the training pool and its feature cache, the Lightning
plumbing (``ShotModelMixin``, ``FitPlan``), constructor-argument checks, the registry's ``ModelSpec`` and INT8
export calibrated on the shots. Uses Lightning and anomalib; knows no model.
"""

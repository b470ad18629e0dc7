"""Data helpers: a generated demo dataset in MVTec AD layout (:mod:`anomalib_fewshot.data.demo`)."""

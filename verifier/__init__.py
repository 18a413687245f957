"""Hallmark's verifier: what a watermark is and how to test for it. No Django, no Celery.

Public API:
- `Suspect`: white-box (weights) and/or black-box (predict) access to a model under test.
- `TestResult`: a scheme's statistic, n, p-value and null type.
- `verifier.schemes.get(name)`: a scheme module (generate_key, embed, test, Key).
- `verifier.stats`: exact binomial tails and Holm's family-wise correction.
"""
from verifier.result import TestResult
from verifier.suspect import NoAccess, Suspect

__all__ = ["NoAccess", "Suspect", "TestResult"]

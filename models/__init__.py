"""The reference model zoo's data: manifests, goldens, generators, generated artifacts.

Loaded by :mod:`harness.modelzoo`; see ``docs/models.md``.
"""

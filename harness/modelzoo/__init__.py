"""The reference model zoo: real-weight models from installed packages and generated ones.

- :mod:`~harness.modelzoo.manifest` - one TOML manifest per model, validated;
- :mod:`~harness.modelzoo.sources` - model bytes from a package (never imported),
  a generator or a checked-in artifact, refused unless their sha256 is the pinned one;
- :mod:`~harness.modelzoo.inputs` - deterministic test inputs;
- :mod:`~harness.modelzoo.golden`, :mod:`~harness.modelzoo.reference`,
  :mod:`~harness.modelzoo.refresh` - golden outputs from the declared reference;
- :mod:`~harness.modelzoo.metrics` - accuracy metrics and precision-class policies;
- :mod:`~harness.modelzoo.execute`, :mod:`~harness.modelzoo.streaming` - running and
  judging a model on a target;
- :mod:`~harness.modelzoo.task_checks` with :mod:`~harness.modelzoo.tasks` - OCR and VAD
  answers compared across targets;
- :mod:`~harness.modelzoo.report` - ``reports/<run-id>/models.html``.

The data (manifests, goldens, generators, artifacts) lives in the ``models`` package;
see ``docs/models.md``.
"""

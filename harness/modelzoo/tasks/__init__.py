"""Task-level checks: tensors that are close can still give a different answer.

:mod:`~harness.modelzoo.tasks.ocr` renders Chinese and English text and runs
detection, direction classification and recognition end to end on a target;
:mod:`~harness.modelzoo.tasks.vad` streams a synthetic signal through Silero VAD
and turns its probabilities into speech segments. Both compare the answer with
the reference's.
"""

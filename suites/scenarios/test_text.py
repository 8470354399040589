"""Text embedding (文本向量): two real MiniLM sentence encoders (all-MiniLM-L6-v2 with int8
weights, paraphrase-MiniLM-L3-v2 in fp32 and as its weight-only int8 configuration, judged
against the fp32 model) on Chinese and English paraphrase pairs; cosine against the
reference's embeddings, retrieval top-1 against the truth.

    shipei run --suite scenarios -k text --target onnxruntime-cpu
"""

from collections.abc import Callable
from typing import Any

import pytest

from harness.modelzoo.tasks.text_check import TEXT_TASKS, check_text_embedding
from harness.modelzoo.zoo import Zoo

SUITE = "scenarios"
ZOO = Zoo()
SCENARIOS = ("llm", "education")

pytestmark = pytest.mark.case_timeout(300)


def _text_test(task: str, model: str, int8: bool) -> Callable[..., None]:
    case = f"test_{task}"
    shown = f"{model}, weight-only int8 vs fp32" if int8 else model

    def test(target: Any) -> None:
        outcome = check_text_embedding(ZOO, target.host, target.capabilities.precision,
                                       target.timeout(), task)
        target.conclude(SUITE, case, outcome,
                        {"task": "text_embedding", "scenarios": list(SCENARIOS),
                         "model": model,
                         "title": f"Sentence embeddings ({shown}): cosine vs reference, "
                                  "retrieval top-1"})

    test.__name__ = test.__qualname__ = case
    test.__doc__ = (f"{shown}: embeddings of 16 documents and their 16 paraphrasing queries "
                    "(8 Chinese, 8 English), one run per sentence: cosine with the "
                    "reference's, retrieval top-1")
    marks = [pytest.mark.shipei_case(suite=SUITE, case=case)]
    if task == "text_embedding":
        marks.append(pytest.mark.representative)
    for mark in marks:
        test = mark(test)
    return test


for _task, (_model, _int8) in TEXT_TASKS.items():
    globals()[f"test_{_task}"] = _text_test(_task, _model, _int8)

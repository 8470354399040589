"""Text embedding (文本向量): two real MiniLM sentence encoders (all-MiniLM-L6-v2 with int8
weights, paraphrase-MiniLM-L3-v2 in fp32 and as its weight-only int8 configuration, judged
against the fp32 model) on Chinese and English paraphrase pairs; cosine against the
reference's embeddings, retrieval top-1 against the truth.

    shipei run --suite scenarios -k text --target onnxruntime-cpu
"""

import pytest

from harness.modelzoo.tasks.text_check import TEXT_TASKS, check_text_embedding
from suites.scenarios.cases import at_target_precision, define, task_test

SCENARIOS = ("llm", "education")

pytestmark = pytest.mark.case_timeout(300)


for _task, (_model, _int8) in TEXT_TASKS.items():
    _shown = f"{_model}, weight-only int8 vs fp32" if _int8 else _model
    define(globals(), task_test(
        f"test_{_task}", at_target_precision(check_text_embedding, _task),
        {"task": "text_embedding", "scenarios": list(SCENARIOS), "model": _model,
         "title": f"Sentence embeddings ({_shown}): cosine vs reference, retrieval top-1"},
        f"{_shown}: embeddings of 16 documents and their 16 paraphrasing queries (8 Chinese, "
        "8 English), one run per sentence: cosine with the reference's, retrieval top-1",
        representative=_task == "text_embedding"))

"""Text embedding (文本向量): all-MiniLM-L6-v2 (int8 weights) on Chinese and English
paraphrase pairs; cosine against the reference's embeddings, retrieval top-1 against the
truth.

    shipei run --suite scenarios -k text --target onnxruntime-cpu
"""

from typing import Any

import pytest

from harness.modelzoo.tasks.text_check import TEXT_MODEL, check_text_embedding
from harness.modelzoo.zoo import Zoo

SUITE = "scenarios"
ZOO = Zoo()
SCENARIOS = ("llm", "education")

pytestmark = pytest.mark.case_timeout(300)


@pytest.mark.representative
@pytest.mark.shipei_case(suite=SUITE, case="test_text_embedding")
def test_text_embedding(target: Any) -> None:
    """Sentence embeddings of 16 documents and their 16 paraphrasing queries (8 Chinese,
    8 English), one run per sentence: cosine with the reference's, retrieval top-1."""
    outcome = check_text_embedding(ZOO, target.host, target.capabilities.precision,
                                   target.timeout())
    target.conclude(SUITE, "test_text_embedding", outcome,
                    {"task": "text_embedding", "scenarios": list(SCENARIOS),
                     "model": TEXT_MODEL,
                     "title": "Sentence embeddings: cosine vs reference, retrieval top-1"})

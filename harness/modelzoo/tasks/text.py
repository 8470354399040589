"""Sentence embeddings: paraphrase pairs, a retrieval set, cosine against the reference.

Ground truth made here: each query in :data:`RETRIEVAL` is a paraphrase of exactly one
document (Chinese and English); every other document is unrelated. A target embeds every
sentence (one run per sentence, as an embedding service does; the mean of the token
states over the attention mask, L2-normalised: sentence-transformers' pooling of
MiniLM), and is judged against the reference's embeddings (cosine per sentence) and
against the truth (retrieval top-1: is a query's nearest document its paraphrase; how
well paraphrase pairs separate from unrelated pairs, ROC AUC). Metrics come from
scikit-learn; the tokenizer is the model's own ``tokenizer.json`` read by ``tokenizers``.

:func:`embed_in_worker` runs inside the target's worker, so its per-sentence latencies
are the target's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.modelzoo.metrics import precision_class

WORKER_FUNCTION = "harness.modelzoo.tasks.text:embed_in_worker"
MAX_TOKENS = 128

#: (language, document, query that paraphrases it)
RETRIEVAL: tuple[tuple[str, str, str], ...] = (
    ("en", "The camera on the production line finds scratches on metal parts.",
     "Surface defects on machined components are detected by a vision system in the factory."),
    ("en", "The car brakes automatically when a pedestrian steps onto the road.",
     "If someone walks in front of the vehicle, it stops by itself."),
    ("en", "The doctor reads the chest X-ray with help from the software.",
     "Software assists the physician in interpreting lung radiographs."),
    ("en", "Students practise English pronunciation with an app that listens to them.",
     "A learning application hears pupils speak and helps them improve their accent."),
    ("en", "The weather will be cold and rainy tomorrow morning.",
     "Expect low temperatures and showers early tomorrow."),
    ("en", "Please transfer the money to my bank account before Friday.",
     "Send the payment to my account by the end of the week."),
    ("en", "The new phone has a larger battery and a brighter screen.",
     "This handset ships with more battery capacity and a more luminous display."),
    ("en", "The recipe needs two eggs, flour and a cup of milk.",
     "To bake it you need flour, milk and a couple of eggs."),
    ("zh", "生产线上的相机检测金属零件表面的划痕。", "工厂用视觉系统发现零件上的表面缺陷。"),
    ("zh", "行人走上马路时汽车会自动刹车。", "有人出现在车前面，车辆就自己停下来。"),
    ("zh", "医生借助软件阅读胸部X光片。", "软件帮助医生判读肺部影像。"),
    ("zh", "学生用一个会听发音的应用练习英语口语。", "学习软件听学生说话并帮助他们纠正口音。"),
    ("zh", "明天早上天气寒冷并且有雨。", "明早气温低，还会下雨。"),
    ("zh", "请在星期五之前把钱转到我的银行账户。", "周末前请把款项汇到我的账户里。"),
    ("zh", "新手机的电池更大，屏幕更亮。", "这款手机电池容量更高，显示屏也更明亮。"),
    ("zh", "这道菜需要两个鸡蛋、面粉和一杯牛奶。", "做这个要用面粉、牛奶和两个鸡蛋。"),
)


@dataclass(frozen=True)
class EmbeddingLimit:
    """What a precision class may lose: each embedding's cosine with the reference's, and
    retrieval top-1 accuracy against the reference's (AIIA: int8 may lose at most 1%)."""

    min_cosine: float
    max_accuracy_drop: float = 0.01


#: by precision class (:func:`~harness.modelzoo.metrics.precision_class`)
EMBEDDING_LIMITS: dict[str, EmbeddingLimit] = {
    "fp32": EmbeddingLimit(0.999), "fp16": EmbeddingLimit(0.995), "bf16": EmbeddingLimit(0.99),
    "int8": EmbeddingLimit(0.98)}


def sentences() -> tuple[list[str], list[str], list[str]]:
    """Documents, queries and each one's language, in :data:`RETRIEVAL` order."""
    return ([d for _, d, _ in RETRIEVAL], [q for _, _, q in RETRIEVAL],
            [lang for lang, _, _ in RETRIEVAL])


def tokenize(tokenizer_file: Path, texts: Sequence[str]) -> list[list[int]]:
    """WordPiece ids of each text (with [CLS]/[SEP]), from the model's tokenizer.json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return [list(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]


# -- inside the target's worker (numpy only) ----------------------------------------------
def embed_in_worker(executable: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Mean-pooled token states of each sentence, one run each, and each run's seconds."""
    output = payload["output"]
    embeddings, seconds = [], []
    for index, ids in enumerate([payload["token_ids"][0], *payload["token_ids"]]):
        ids_array = np.asarray([ids], dtype=np.int64)
        feeds = {"input_ids": ids_array, "attention_mask": np.ones_like(ids_array)}
        if payload.get("token_type_ids"):
            feeds["token_type_ids"] = np.zeros_like(ids_array)
        started = time.perf_counter()
        hidden = np.asarray(executable.run(feeds)[output], dtype=np.float32)
        elapsed = time.perf_counter() - started
        if index:  # the first run warms up
            seconds.append(elapsed)
            embeddings.append(hidden[0].mean(axis=0))
    return {"embeddings": np.stack(embeddings), "seconds": seconds}


def worker_payload(token_ids: Sequence[Sequence[int]], output: str, token_type_ids: bool
                   ) -> dict[str, Any]:
    return {"token_ids": [list(map(int, ids)) for ids in token_ids], "output": output,
            "token_type_ids": token_type_ids}


# -- metrics (outside the worker) -------------------------------------------------------
def normalized(embeddings: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    return normalize(np.asarray(embeddings, dtype=np.float64))


def retrieval(embeddings: np.ndarray, languages: Sequence[str]) -> dict[str, Any]:
    """Top-1 retrieval of each query's document among all documents, and the pair AUC.

    ``embeddings`` holds the documents, then the queries (as :func:`sentences` orders)."""
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.metrics.pairwise import cosine_similarity

    count = len(languages)
    documents, queries = embeddings[:count], embeddings[count:]
    similarity = cosine_similarity(queries, documents)
    truth = np.arange(count)
    predicted = similarity.argmax(axis=1)
    figures: dict[str, Any] = {"retrieval_top1": float(accuracy_score(truth, predicted)),
                               "retrieved": predicted.tolist()}
    for language in sorted(set(languages)):
        rows = [i for i, lang in enumerate(languages) if lang == language]
        figures[f"retrieval_top1_{language}"] = float(accuracy_score(truth[rows],
                                                                     predicted[rows]))
    labels = np.eye(count, dtype=int).ravel()  # paraphrase pairs on the diagonal
    figures["pair_auc"] = float(roc_auc_score(labels, similarity.ravel()))
    figures["paraphrase_cosine_mean"] = float(np.diag(similarity).mean())
    figures["unrelated_cosine_mean"] = float(similarity[~np.eye(count, dtype=bool)].mean())
    return figures


def compare(embeddings: np.ndarray, reference: np.ndarray, languages: Sequence[str],
            target_precision: str, model_precision: str = "fp32"
            ) -> tuple[bool, str, dict[str, Any]]:
    """Verdict, message naming the figure, and figures of a target against the reference
    (the fp32 model's embeddings, also for an int8 ``model_precision``)."""
    from sklearn.metrics.pairwise import paired_cosine_distances

    mine, theirs = np.asarray(embeddings, np.float64), np.asarray(reference, np.float64)
    if mine.shape != theirs.shape or not np.isfinite(mine).all():
        return False, (f"embeddings of shape {list(mine.shape)} (finite: "
                       f"{bool(np.isfinite(mine).all())}); the reference's are "
                       f"{list(theirs.shape)}"), {"cosine_min": 0.0}
    precision = precision_class(model_precision, target_precision)
    limit = EMBEDDING_LIMITS[precision]
    cosines = 1.0 - paired_cosine_distances(mine, theirs)
    found, expected = retrieval(normalized(mine), languages), retrieval(normalized(theirs),
                                                                         languages)
    drop = expected["retrieval_top1"] - found["retrieval_top1"]
    details = {key: found.pop(key) for key in ("retrieved", "paraphrase_cosine_mean",
                                                "unrelated_cosine_mean")}
    metrics: dict[str, Any] = {
        "cosine_min": round(float(cosines.min()), 6), **found,
        "precision_class": precision,
        "limit": {"min_cosine": limit.min_cosine, "max_accuracy_drop": limit.max_accuracy_drop},
        # numeric figures beyond the contract's stay in here: a certificate's model table
        # shows a case's first eight top-level numbers
        "details": {**details, "cosine_mean": round(float(cosines.mean()), 6),
                    "reference_retrieval_top1": expected["retrieval_top1"],
                    "reference_pair_auc": expected["pair_auc"],
                    "retrieval_drop": round(drop, 4)}}
    if precision != "fp32":  # a lower precision compared with the fp32 reference
        metrics["accuracy_drop"] = round(drop, 4)
    problems = []
    if cosines.min() < limit.min_cosine:
        worst = int(cosines.argmin())
        problems.append(f"cosine_min {cosines.min():.4f} with the reference's embedding "
                        f"(sentence {worst}) < {limit.min_cosine} ({precision})")
    if drop > limit.max_accuracy_drop:
        problems.append(f"retrieval top-1 {found['retrieval_top1']:.4f} is {drop:.4f} below "
                        f"the reference's {expected['retrieval_top1']:.4f} (allowed "
                        f"{limit.max_accuracy_drop}, {precision})")
    return not problems, "; ".join(problems), metrics

"""``reports/<run-id>/models.html``: the model suite's results, bilingual (中文/English).

Fed from the run's records alone (so ``shipei report RUN_ID`` rebuilds it): a
model x target table with status and accuracy figures, the OCR check's
recognized strings per target beside the rendered text and the reference's
reading, and the VAD check's speech segments per target with a plot of the
speech probability per chunk (inline SVG, no plotting library needed).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.results.case_record import Status
from harness.results.record_files import RunPaths

SUITE = "models"
STATUS_NAMES = frozenset(s.value for s in Status)
REPORT_FILE = "models.html"
STATUS_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#bc4c00",
                  "crash": "#8250df", "timeout": "#9a6700", "infra_error": "#57606a",
                  "skip": "#6e7781"}

CSS = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
vertical-align:top;font-size:13px}th{background:#f6f8fa;text-align:left}
.st{color:#fff;border-radius:4px;padding:1px 6px;font-weight:600;font-size:12px}
.fig{color:#57606a;font-size:12px}.diff{background:#ffebe9}.same{background:#dafbe1}
.note{color:#57606a;font-size:13px;max-width:60em}code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _badge(status: str, expected: bool) -> str:
    colour = STATUS_COLOURS.get(status, "#57606a")
    mark = "" if expected else " ⚠"
    return (f'<span class="st" style="background:{colour}">{_e(status)} '
            f'{_e(Status(status).zh if status in STATUS_NAMES else "")}{mark}</span>')


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return "–" if value is None else _e(value)


def _figures(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    parts = []
    if "max_abs_error" in metrics:
        parts.append(f"abs {_number(metrics['max_abs_error'])}")
    if "min_cosine_similarity" in metrics:
        parts.append(f"cos {_number(metrics['min_cosine_similarity'], 6)}")
    if metrics.get("top1_agreement") is not None:
        parts.append(f"top1 {_number(metrics['top1_agreement'])}")
    if metrics.get("top5_overlap") is not None:
        parts.append(f"top5 {_number(metrics['top5_overlap'])}")
    if "precision_class" in metrics:
        parts.append(_e(metrics["precision_class"]))
    return " · ".join(parts)


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "<td>–</td>"
    message = record.get("message") or ""
    title = f' title="{_e(message)}"' if message else ""
    detail = f'<div class="fig">{_e(message[:160])}</div>' if message and record[
        "status"] != "pass" else ""
    return (f"<td{title}>{_badge(record['status'], record.get('as_expected', True))}"
            f'<div class="fig">{_figures(record)}</div>{detail}</td>')


def _matrix(records: list[dict[str, Any]], targets: list[str]) -> str:
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    titles: dict[str, str] = {}
    for record in records:
        by_case.setdefault(record["case"], {})[record["target"]] = record
        tags = record.get("tags") or {}
        titles.setdefault(record["case"], tags.get("title") or tags.get("task") or "")
    head = "".join(f"<th>{_e(t)}</th>" for t in targets)
    rows = [f"<tr><th>{_e(case.removeprefix('test_'))}<div class='fig'>{_e(titles[case])}"
            f"</div></th>{''.join(_cell(cases.get(t)) for t in targets)}</tr>"
            for case, cases in sorted(by_case.items())]
    return (f"<table><tr><th>模型 / model</th>{head}</tr>{''.join(rows)}</table>")


def _ocr(records: list[dict[str, Any]]) -> str:
    tried = [r for r in records if r["case"] == "test_ocr_pipeline"]
    found = [r for r in tried if (r.get("metrics") or {}).get("texts") is not None]
    if not found:
        return f"<ul>{_not_run(tried)}</ul>" if tried else ""
    first = found[0]["metrics"]
    truth = first.get("ground_truth") or []
    reference = first.get("reference_texts") or []
    lines = max([len(truth), len(reference)] + [len(r["metrics"]["texts"]) for r in found])
    head = "".join(f"<th>{_e(r['target'])}</th>" for r in found)
    rows = []
    for i in range(lines):
        want = reference[i] if i < len(reference) else ""
        cells = []
        for record in found:
            texts = record["metrics"]["texts"]
            text = texts[i] if i < len(texts) else ""
            cells.append(f"<td class='{'same' if text == want else 'diff'}'>{_e(text)}</td>")
        rows.append(f"<tr><td>{i}</td><td>{_e(truth[i] if i < len(truth) else '')}</td>"
                    f"<td>{_e(want)}</td>{''.join(cells)}</tr>")
    figures = "".join(
        f"<li>{_e(r['target'])}: {_badge(r['status'], r.get('as_expected', True))} "
        f"min box IoU {_number(r['metrics'].get('min_box_iou'))}, "
        f"char accuracy 字符准确率 {_number(r['metrics'].get('char_accuracy'))}, "
        f"reference 参考: {_e(r['metrics'].get('reference_origin', ''))}</li>" for r in found)
    return (f"<p class='note'>字体 font: {_e(first.get('font', ''))}</p>"
            f"<table><tr><th>#</th><th>渲染文本 / rendered</th><th>参考识别 / reference</th>"
            f"{head}</tr>{''.join(rows)}</table>"
            f"<ul>{figures}{_not_run([r for r in tried if r not in found])}</ul>")


def _not_run(records: list[dict[str, Any]]) -> str:
    """List items for task checks that gave no answer (skipped, errors, crashes)."""
    return "".join(f"<li>{_e(r['target'])} {_e(r['case'])}: "
                   f"{_badge(r['status'], r.get('as_expected', True))} "
                   f"{_e((r.get('message') or '')[:200])}</li>" for r in records)


def _sparkline(values: Sequence[float], truth: Sequence[Sequence[float]], seconds: float,
               width: int = 480, height: int = 60) -> str:
    if not values:
        return ""
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - float(v) * height:.1f}"
                      for i, v in enumerate(values))
    shades = "".join(
        f'<rect x="{s / seconds * width:.1f}" y="0" width="{(e - s) / seconds * width:.1f}" '
        f'height="{height}" fill="#dafbe1"/>' for s, e in truth) if seconds else ""
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="speech probability per chunk">{shades}'
            f'<line x1="0" x2="{width}" y1="{height / 2}" y2="{height / 2}" stroke="#d0d7de" '
            f'stroke-dasharray="3"/><polyline fill="none" stroke="#0969da" stroke-width="1.5" '
            f'points="{points}"/></svg>')


def _vad(records: list[dict[str, Any]]) -> str:
    tried = [r for r in records if r["case"].startswith("test_vad_segments")]
    found = [r for r in tried if (r.get("metrics") or {}).get("speech_segments") is not None]
    if not found:
        return f"<ul>{_not_run(tried)}</ul>" if tried else ""
    rows = []
    for record in found:
        m = record["metrics"]
        truth = m.get("true_segments") or []
        seconds = m.get("chunks", 0) * 512 / 16000
        model = ", ".join((record.get("tags") or {}).get("models") or [])
        rows.append(
            f"<tr><td>{_e(record['target'])}</td><td>{_e(model)}</td>"
            f"<td>{_badge(record['status'], record.get('as_expected', True))}</td>"
            f"<td>{_e(m.get('speech_segments'))}</td><td>{_e(m.get('reference_segments'))}</td>"
            f"<td>{_number(m.get('max_boundary_shift_s'))}</td>"
            f"<td>{_sparkline(m.get('probabilities') or [], truth, seconds)}</td></tr>")
    truth = found[0]["metrics"].get("true_segments")
    skipped = _not_run([r for r in tried if r not in found])
    return (f"<p class='note'>合成语音位置 / speech synthesized at {_e(truth)} s; "
            f"绿色为合成语音段，虚线为阈值 0.5 / green: synthesized speech, dashed: "
            f"threshold 0.5</p><table><tr><th>目标 / target</th><th>模型 / model</th>"
            f"<th>状态 / status</th>"
            f"<th>语音段 / segments (s)</th><th>参考 / reference</th>"
            f"<th>最大边界偏移 / max shift (s)</th><th>语音概率 / speech probability</th></tr>"
            f"{''.join(rows)}</table><ul>{skipped}</ul>")


NOTES = """<p class="note">判定 / Judging: 每个目标的输出与参考实现（onnxruntime-cpu，fp32，
关闭图优化）预先计算的黄金输出比较。fp32 模型按 fp32 容差逐元素比较并要求余弦相似度
≥ 0.9999；int8 模型只看余弦相似度与 top-k 一致性。Every target is judged against golden
outputs computed by the reference (onnxruntime-cpu, fp32, graph optimizations disabled):
fp32 models element-wise with fp32 tolerances and cosine ≥ 0.9999; int8 models by cosine
similarity and top-k agreement only. top1/top5 count only rows whose reference ranking is
not a tie; the onnx "light" models have constant weights, so their class scores are all
tied (top-k shown as –). ⚠ = 与预期不符 / not as expected.</p>"""


def write_models_report(paths: RunPaths, run_info: dict[str, Any],
                        records: list[dict[str, Any]]) -> list[Path]:
    """The report writer for ``harness.reports.writing.REPORT_WRITERS``; nothing without
    model-suite records."""
    ours = [r for r in records if r.get("suite") == SUITE]
    if not ours:
        return []
    targets = list(dict.fromkeys(r["target"] for r in ours))
    body = (f"<h1>模型套件报告 / Model suite report</h1>"
            f"<p class='note'>运行 run {_e(paths.run_id)} · harness "
            f"{_e(run_info.get('harness_version', ''))} · {_e(run_info.get('started_at', ''))}"
            f"</p><h2>模型 × 目标 / Models × targets</h2>{_matrix(ours, targets)}{NOTES}"
            f"<h2>OCR 识别结果 / OCR: recognized text per target</h2>{_ocr(ours)}"
            f"<h2>语音活动检测 / VAD: speech segments per target</h2>{_vad(ours)}")
    path = paths.report_dir / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html lang='zh-CN'><head><meta charset='utf-8'>"
                    f"<title>Shipei models {_e(paths.run_id)}</title><style>{CSS}</style>"
                    f"</head><body>{body}</body></html>\n", encoding="utf-8")
    return [path]

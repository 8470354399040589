"""The operator coverage matrix: per ONNX operator, each target's status side by side.

Built from run records alone (``tags.op_type``, ``tags.opset``, ``tags.dtypes``,
``tags.source`` as the operator suite writes them), from one run or several. A
column is a target label; when the same label appears in two runs it becomes
``label@run-id``. A record without an ``op_type`` tag is grouped under its suite
name in brackets, e.g. ``[model_file]``.

Written as text (the terminal), CSV (one file per operator, one per case) and one
self-contained HTML page with bilingual (中文/English) headings.
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.case_record import RECORDED_STATUSES

STATUS_ORDER = tuple(s.value for s in RECORDED_STATUSES)
#: bilingual names of the statuses, for people
STATUS_LABELS = {s.value: s.bilingual for s in RECORDED_STATUSES}
GROUPINGS = ("op", "op-dtype", "case")
NOT_RUN = "-"


@dataclass
class CaseRow:
    suite: str
    case: str
    op_type: str
    opset: int | None
    dtypes: tuple[str, ...]
    source: str
    statuses: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def group(self, by: str) -> str:
        if by == "op":
            return self.op_type
        if by == "op-dtype":
            return f"{self.op_type} ({','.join(self.dtypes) or '?'})"
        return self.case


@dataclass
class GroupRow:
    """Several cases (one operator, or one operator and input dtype set) summarized."""

    key: str
    cases: list[CaseRow]

    @property
    def opsets(self) -> list[int]:
        return sorted({c.opset for c in self.cases if c.opset is not None})

    @property
    def dtypes(self) -> list[str]:
        return sorted({d for c in self.cases for d in c.dtypes})

    def counts(self, column: str) -> Counter[str]:
        return Counter(c.statuses[column] for c in self.cases if column in c.statuses)

    def cell(self, column: str) -> str:
        """``passed/ran`` for this column, or ``-`` when it ran none of the cases."""
        counts = self.counts(column)
        ran = sum(counts.values())
        return f"{counts['pass']}/{ran}" if ran else NOT_RUN

    def differs(self, columns: Sequence[str]) -> bool:
        return len({self.cell(c) for c in columns}) > 1


@dataclass
class Matrix:
    columns: list[str]
    rows: list[CaseRow]
    runs: list[dict[str, Any]]  # run.json of every run, in the order given

    def groups(self, by: str = "op") -> list[GroupRow]:
        if by not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, not {by!r}")
        grouped: dict[str, list[CaseRow]] = {}
        for row in self.rows:
            grouped.setdefault(row.group(by), []).append(row)
        return [GroupRow(key, cases) for key, cases in sorted(
            grouped.items(), key=lambda item: (item[0].lower(), item[0]))]

    def totals(self, column: str) -> Counter[str]:
        return Counter(r.statuses[column] for r in self.rows if column in r.statuses)

    def full_ops(self, column: str) -> tuple[int, int]:
        """(operators whose every case passed, operators the column ran)."""
        ops = [g for g in self.groups("op") if g.counts(column)]
        return sum(1 for g in ops if g.counts(column)["pass"] == sum(g.counts(column).values())
                   ), len(ops)


def build(runs: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]]) -> Matrix:
    """A matrix from ``(run_info, records)`` pairs (see
    :func:`harness.results.record_files.load_run`)."""
    seen_labels: Counter[str] = Counter()
    for _, records in runs:
        for label in {r["target"] for r in records}:
            seen_labels[label] += 1
    columns: list[str] = []
    rows: dict[tuple[str, str], CaseRow] = {}
    for info, records in runs:
        run_id = str(info.get("run_id", "?"))
        for record in records:
            label = record["target"]
            column = f"{label}@{run_id}" if seen_labels[label] > 1 else label
            if column not in columns:
                columns.append(column)
            tags = record.get("tags") or {}
            key = (record["suite"], record["case"])
            row = rows.get(key)
            if row is None:
                row = rows[key] = CaseRow(
                    suite=record["suite"], case=record["case"],
                    op_type=str(tags.get("op_type") or f"[{record['suite']}]"),
                    opset=tags.get("opset"), dtypes=tuple(tags.get("dtypes") or ()),
                    source=str(tags.get("source") or ""))
            row.statuses[column] = record["status"]
            row.messages[column] = record.get("message") or ""
    ordered = sorted(rows.values(), key=lambda r: (r.op_type.lower(), r.case))
    return Matrix(columns, ordered, [info for info, _ in runs])


# -- text ------------------------------------------------------------------------------
def _table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header), *[list(r) for r in body]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                      for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def totals_lines(matrix: Matrix) -> list[str]:
    header = ["target", *STATUS_ORDER, "cases", "ops all-pass"]
    body = []
    for column in matrix.columns:
        counts = matrix.totals(column)
        full, ran = matrix.full_ops(column)
        body.append([column, *(str(counts[s]) for s in STATUS_ORDER),
                     str(sum(counts.values())), f"{full}/{ran}"])
    return _table(header, body)


def text_lines(matrix: Matrix, by: str = "op", only_differences: bool = False) -> list[str]:
    """The matrix as aligned text: one line per group, then per-target totals."""
    if by == "case":
        header = ["case", "op", *matrix.columns]
        body = [[r.case, r.op_type, *(r.statuses.get(c, NOT_RUN) for c in matrix.columns)]
                for r in matrix.rows
                if not only_differences or len({r.statuses.get(c) for c in matrix.columns}) > 1]
    else:
        header = ["operator" if by == "op" else "operator (input dtypes)", "cases",
                  *matrix.columns, ""]
        body = [[g.key, str(len(g.cases)), *(g.cell(c) for c in matrix.columns),
                 "*" if g.differs(matrix.columns) else ""]
                for g in matrix.groups(by)
                if not only_differences or g.differs(matrix.columns)]
    lines = _table(header, body)
    legend = ("cells: cases passed / cases run; '-' not run; '*' targets differ"
              if by != "case" else "cells: case status; '-' not run")
    return [*lines, legend, "", *totals_lines(matrix)]


# -- CSV -------------------------------------------------------------------------------
def write_csv(matrix: Matrix, ops_path: Path, cases_path: Path) -> list[Path]:
    """Per operator (pass/ran and each status count per target) and per case."""
    ops_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ops_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["op_type", "opsets", "dtypes", "cases"]
        for column in matrix.columns:
            header += [f"{column} passed", f"{column} ran",
                       *(f"{column} {s}" for s in STATUS_ORDER if s != "pass")]
        writer.writerow(header)
        for group in matrix.groups("op"):
            row: list[Any] = [group.key, " ".join(map(str, group.opsets)),
                              " ".join(group.dtypes), len(group.cases)]
            for column in matrix.columns:
                counts = group.counts(column)
                row += [counts["pass"], sum(counts.values()),
                        *(counts[s] for s in STATUS_ORDER if s != "pass")]
            writer.writerow(row)
    with open(cases_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["suite", "case", "op_type", "opset", "dtypes", "source",
                         *matrix.columns])
        for case in matrix.rows:
            writer.writerow([case.suite, case.case, case.op_type, case.opset or "",
                             " ".join(case.dtypes), case.source,
                             *(case.statuses.get(c, NOT_RUN) for c in matrix.columns)])
    return [ops_path, cases_path]


# -- HTML ------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:center}
th{background:#f0f0f0;position:sticky;top:0}
td.name{text-align:left;font-family:monospace}
.full{background:#c8ecc8}.part{background:#fbe7b0}.none{background:#f5c1c1}
.skip{background:#e4e4e4}.nr{color:#999}
.pass{background:#c8ecc8}.fail{background:#f5c1c1}.error{background:#f7d2a8}
.timeout{background:#e2c6f0}.crash{background:#e9a3a3}.infra_error{background:#b9d4f2}
small{color:#666}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _group_class(group: GroupRow, column: str) -> str:
    counts = group.counts(column)
    ran = sum(counts.values())
    if not ran:
        return "nr"
    if counts["pass"] == ran:
        return "full"
    if counts["skip"] == ran:
        return "skip"
    return "part" if counts["pass"] else "none"


def _run_lines(matrix: Matrix) -> list[str]:
    lines = []
    for info in matrix.runs:
        targets = info.get("targets") or {}
        described = ", ".join(
            f"{label} ({t.get('runtime', '?')} {t.get('runtime_version', '?')})"
            for label, t in targets.items())
        lines.append(f"<li><code>{_esc(info.get('run_id', '?'))}</code> "
                     f"{_esc(info.get('started_at') or '')}: {_esc(described)}</li>")
    return lines


def html_page(matrix: Matrix) -> str:
    columns = matrix.columns
    head_cols = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    parts = [
        "<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
        "<title>算子覆盖矩阵 / Operator coverage matrix</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>算子覆盖矩阵 / Operator coverage matrix</h1>",
        "<p>运行 / Runs:</p><ul>", *_run_lines(matrix), "</ul>",
        "<h2>各目标合计 / Totals per target</h2><table><tr><th>目标 / Target</th>",
        *(f"<th>{_esc(STATUS_LABELS[s])}</th>" for s in STATUS_ORDER),
        "<th>用例 / Cases</th><th>全部通过的算子 / Ops all passing</th></tr>",
    ]
    for column in columns:
        counts = matrix.totals(column)
        full, ran = matrix.full_ops(column)
        parts.append(f"<tr><td class='name'>{_esc(column)}</td>"
                     + "".join(f"<td>{counts[s]}</td>" for s in STATUS_ORDER)
                     + f"<td>{sum(counts.values())}</td><td>{full}/{ran}</td></tr>")
    parts += [
        "</table>",
        "<h2>按算子 / By operator</h2>",
        "<p><small>单元格：通过数/运行数 · cells: cases passed / cases run; "
        "绿=全部通过 green=all pass, 黄=部分 amber=some, 红=无 red=none, "
        "灰=全部跳过 grey=all skipped, '-' 未运行 not run</small></p>",
        "<table><tr><th>算子 / Operator</th><th>算子集 / Opsets</th>"
        f"<th>数据类型 / Dtypes</th><th>用例 / Cases</th>{head_cols}</tr>",
    ]
    for group in matrix.groups("op"):
        anchor = _esc("op-" + group.key)
        cells = "".join(f"<td class='{_group_class(group, c)}'>{_esc(group.cell(c))}</td>"
                        for c in columns)
        parts.append(f"<tr><td class='name'><a href='#{anchor}'>{_esc(group.key)}</a></td>"
                     f"<td>{_esc(' '.join(map(str, group.opsets)))}</td>"
                     f"<td>{_esc(' '.join(group.dtypes))}</td><td>{len(group.cases)}</td>"
                     f"{cells}</tr>")
    parts += ["</table>", "<h2>按用例 / By case</h2>",
              "<table><tr><th>用例 / Case</th><th>算子 / Operator</th><th>算子集 / Opset</th>"
              f"<th>数据类型 / Dtypes</th><th>来源 / Source</th>{head_cols}</tr>"]
    previous_op = None
    for row in matrix.rows:
        anchor = f" id='{_esc('op-' + row.op_type)}'" if row.op_type != previous_op else ""
        previous_op = row.op_type
        cells = "".join(
            f"<td class='{_esc(row.statuses.get(c, 'nr'))}' "
            f"title='{_esc(row.messages.get(c, ''))}'>{_esc(row.statuses.get(c, NOT_RUN))}</td>"
            for c in columns)
        parts.append(f"<tr{anchor}><td class='name'>{_esc(row.case)}</td>"
                     f"<td>{_esc(row.op_type)}</td><td>{_esc(row.opset or '')}</td>"
                     f"<td>{_esc(' '.join(row.dtypes))}</td><td>{_esc(row.source)}</td>"
                     f"{cells}</tr>")
    parts += ["</table>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_reports(matrix: Matrix, directory: Path) -> list[Path]:
    """``matrix.csv``, ``matrix-cases.csv`` and ``matrix.html`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = write_csv(matrix, directory / "matrix.csv", directory / "matrix-cases.csv")
    page = directory / "matrix.html"
    page.write_text(html_page(matrix), encoding="utf-8")
    return [*written, page]


def write_run_matrix(paths: Any, run_info: dict[str, Any], records: list[dict[str, Any]]
                     ) -> list[Path]:
    """The operators suite's report: the coverage matrix, when a run put operator cases on
    more than one target (``matrix.csv``, ``matrix-cases.csv``, ``matrix.html``)."""
    if len({r["target"] for r in records if r.get("suite") == "operators"}) < 2:
        return []
    return write_reports(build([(run_info, records)]), paths.report_dir)

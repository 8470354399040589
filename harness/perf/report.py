"""``reports/<run-id>/performance.html``: a self-contained, bilingual performance report.

Registered in :data:`harness.reports.writing.REPORT_WRITERS`; writes nothing for a run
without performance records. Plots are PNGs embedded as base64, so the file can
be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.perf import plots
from harness.perf import samples as samples_io
from harness.perf.settings import OFFLINE, SINGLE_STREAM
from harness.results.record_files import RunPaths

REPORT_FILE = "performance.html"

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;
color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.bad{color:#b00020}.warn{color:#a66b00}.note{color:#555;font-size:13px}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""


def performance_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "perf_schema_version" in (r.get("metrics") or {})
            or (r.get("tags") or {}).get("scenario") in (SINGLE_STREAM, OFFLINE)]


def write_performance_report(paths: RunPaths, run_info: dict[str, Any],
                             records: list[dict[str, Any]]) -> list[Path]:
    """The report writer: nothing unless the run has performance records."""
    mine = performance_records(records)
    if not mine:
        return []
    target = paths.report_dir / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(paths, run_info, mine), encoding="utf-8")
    return [target]


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
    return "-" if value is None else _e(value)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _samples(paths: RunPaths, record: dict[str, Any]) -> np.ndarray | None:
    relative = record.get("metrics", {}).get("samples_file")
    if not relative:
        return None
    try:
        return samples_io.load(paths.run_dir, relative).latency_ns
    except samples_io.SamplesError:
        return None


def _results_table(records: list[dict[str, Any]]) -> str:
    head = ("target / 目标", "scenario / 场景", "model / 模型", "status / 状态", "n",
            "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "std ms",
            "queries/s", "samples/s", "valid / 有效", "alone / 独占")
    rows = []
    for r in sorted(records, key=lambda r: (r["target"], r["case"])):
        m = r.get("metrics") or {}
        s = m.get("summary") or {}
        alone = (m.get("machine") or {}).get("alone")
        status_class = "" if r["status"] == "pass" else ' class="bad"'
        cells = [f'<td class="l">{_e(r["target"])}</td>',
                 f'<td class="l">{_e(m.get("scenario", r.get("tags", {}).get("scenario", "")))}'
                 "</td>",
                 f'<td class="l">{_e(m.get("model", r.get("tags", {}).get("model", "")))}</td>',
                 f"<td{status_class}>{_e(r['status'])}</td>", f"<td>{_num(s.get('count'))}</td>"]
        cells += [f"<td>{_num(s.get(k))}</td>" for k in
                  ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "std_ms",
                   "queries_per_s", "samples_per_s")]
        valid = (m.get("loadgen") or {}).get("validity", "-")
        cells.append(f"<td>{_e(valid)}</td>")
        cells.append("<td>-</td>" if alone is None else
                     ("<td>yes / 是</td>" if alone else '<td class="warn">no / 否</td>'))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _conditions_table(records: list[dict[str, Any]]) -> str:
    head = ("target / 目标", "case / 用例", "threads / 线程", "governor / 调频策略",
            "MHz", "foreign CPU / 其他进程占用", "load before→after / 负载", "message / 说明")
    rows = []
    for r in sorted(records, key=lambda r: (r["target"], r["case"])):
        m = r.get("metrics") or {}
        machine, threads = m.get("machine") or {}, m.get("threads") or {}
        freq = machine.get("frequency_mhz") or {}
        mhz = f"{min(freq.values()):.0f}-{max(freq.values()):.0f}" if freq else "-"
        share = machine.get("foreign_cpu_share")
        load = (f"{machine['loadavg_before'][0]:.2f}→{machine['loadavg_after'][0]:.2f}"
                if machine.get("loadavg_before") and machine.get("loadavg_after") else "-")
        declared = ", ".join(f"{k}={v}" for k, v in (threads.get("declared") or {}).items())
        thread_text = f"{declared}; live {threads.get('process_threads', '-')}"
        rows.append(
            f'<tr><td class="l">{_e(r["target"])}</td><td class="l">{_e(r["case"])}</td>'
            f'<td class="l">{_e(thread_text)}</td>'
            f'<td>{_e(", ".join(machine.get("governor") or []) or "unreadable / 不可读")}</td>'
            f"<td>{_e(mhz)}</td><td>{'-' if share is None else f'{share:.0%}'}</td>"
            f'<td>{_e(load)}</td><td class="l">{_e(r.get("message", ""))}</td></tr>')
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _cdf_section(paths: RunPaths, records: list[dict[str, Any]]) -> str:
    parts = []
    for target in sorted({r["target"] for r in records}):
        curves = {}
        for r in records:
            if (r["target"] != target or r["status"] != "pass"
                    or (r.get("metrics") or {}).get("scenario") != SINGLE_STREAM):
                continue
            latency = _samples(paths, r)
            if latency is not None and latency.size:
                curves[r["metrics"].get("model", r["case"])] = latency
        if curves:
            parts.append(_img(plots.latency_cdf(f"{target}: single-stream latency CDF", curves),
                              f"latency CDF {target}"))
    return "".join(parts) or '<p class="note">no single-stream samples / 无单流样本</p>'


def _throughput_section(records: list[dict[str, Any]]) -> str:
    offline = [r for r in records if (r.get("metrics") or {}).get("scenario") == OFFLINE
               and r["status"] == "pass" and (r["metrics"].get("summary") or {}).get(
                   "samples_per_s")]
    if not offline:
        return '<p class="note">no offline results / 无离线结果</p>'
    models = sorted({r["metrics"]["model"] for r in offline})
    targets = sorted({r["target"] for r in offline})
    series = {t: [next((r["metrics"]["summary"]["samples_per_s"] for r in offline
                        if r["target"] == t and r["metrics"]["model"] == m), float("nan"))
                  for m in models] for t in targets}
    return _img(plots.throughput_bars("offline throughput", models, series),
                "offline throughput")


def render(paths: RunPaths, run_info: dict[str, Any], records: list[dict[str, Any]]) -> str:
    env = run_info.get("environment") or {}
    engine = next((r["metrics"].get("engine") for r in records
                   if (r.get("metrics") or {}).get("engine")), "-")
    not_alone = sum(1 for r in records
                    if ((r.get("metrics") or {}).get("machine") or {}).get("alone") is False)
    parts = [
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">",
        f"<title>性能报告 Performance report {_e(paths.run_id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>性能报告 / Performance report</h1><p>run / 运行 <b>{_e(paths.run_id)}</b> · "
        f"CPU {_e(env.get('cpu_model', '-'))} × {_e(env.get('cpu_count', '-'))} · "
        f"{_e((env.get('os') or {}).get('pretty_name', '-'))} · timing engine / 计时引擎 "
        f"{_e(engine)} · git {_e((run_info.get('git_commit') or '-')[:12])}</p>",
    ]
    if not_alone:
        parts.append(f'<p class="warn">{not_alone} measurement(s) shared the machine with other '
                     f"processes; treat those figures as indicative. / {not_alone} 项测量期间"
                     "有其他进程占用 CPU，其结果仅供参考。</p>")
    parts += ["<h2>结果 / Results</h2>", _results_table(records)]
    if plots.available():
        parts += ["<h2>延迟分布 / Latency CDF</h2>", _cdf_section(paths, records),
                  "<h2>吞吐量 / Throughput</h2>", _throughput_section(records),
                  '<p class="note">Plots show passing cases only. / 图中仅含通过的用例。</p>']
    else:
        parts.append('<p class="note">matplotlib is not installed: no plots '
                     "(pip install 'shipei[plots]') / 未安装 matplotlib，无图表</p>")
    parts += ["<h2>测量条件 / Measurement conditions</h2>", _conditions_table(records),
              '<p class="note">Latency: per-inference time measured inside the target\'s '
              "worker under MLPerf LoadGen; percentiles use LoadGen's rule (element ⌊n·p⌋ of "
              "the sorted samples). Samples: results/&lt;run-id&gt;/samples/. / 延迟为目标工作"
              "进程内在 MLPerf LoadGen 调度下测得的单次推理时间；百分位按 LoadGen 规则计算。"
              "</p></body></html>"]
    return "\n".join(parts)

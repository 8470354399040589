"""Bilingual (中文/English) intake and audit reports: JSON for machines, text for the
terminal, HTML for people."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

STATE_LABELS = {"pass": ("通过", "pass"), "fail": ("未通过", "FAILED"),
                "not run": ("未执行", "not run"),
                "inconclusive": ("无法判定", "inconclusive")}


def text_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for check in report["checks"]:
        zh, en = STATE_LABELS[check["state"]]
        lines.append(f"  [{en:>7}] {check['id']:<13} {check['title_en']} / {check['title_zh']}"
                     + (f": {check['detail']}" if check["detail"] else ""))
    return lines


#: the page's look: the state of each check at a glance (colours as in the matrix report)
STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1.5em auto;
max-width:72em;color:#222;line-height:1.45}
h1{font-size:1.4em;margin:0 0 .4em}
.verdict{font-size:1.15em;font-weight:600;padding:.4em .8em;border-radius:4px;display:inline-block}
.verdict.accepted{background:#c8ecc8}.verdict.refused{background:#f5c1c1}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;font-size:13px}
dt{color:#666}dd{margin:0;font-family:monospace;word-break:break-all}
table{border-collapse:collapse;margin:1em 0;font-size:13px;width:100%}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
tr.pass td:nth-child(3){background:#c8ecc8}tr.fail td:nth-child(3){background:#f5c1c1}
tr.inconclusive td:nth-child(3){background:#fbe7b0}tr.not-run td:nth-child(3){color:#999}
"""


def render_html(report: dict[str, Any], title_zh: str, title_en: str) -> str:
    e = html.escape
    verdict = ("已接受 / Accepted" if report.get("accepted") else
               f"已拒绝 / Refused (check: {report.get('failed_check')})")
    verdict_class = "accepted" if report.get("accepted") else "refused"
    rows = "".join(
        f"<tr class='{e(c['state'].replace(' ', '-'))}'><td><code>{e(c['id'])}</code></td>"
        f"<td>{e(c['title_zh'])}<br>{e(c['title_en'])}</td>"
        f"<td>{e(' / '.join(STATE_LABELS[c['state']]))}</td><td>{e(c['detail'])}</td></tr>"
        for c in report["checks"])
    facts = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in report.items()
                    if k not in ("checks", "accepted") and v is not None
                    and not isinstance(v, (dict, list)))
    return (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
            f"<title>{e(title_zh)} / {e(title_en)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{e(title_zh)} / {e(title_en)}</h1>"
            f"<p class='verdict {verdict_class}'>{e(verdict)}</p>"
            f"<dl>{facts}</dl><table><tr><th>check</th><th>检查 / Check</th>"
            f"<th>结果 / Result</th><th>详情 / Detail</th></tr>{rows}</table></body></html>")


def write_report(out_dir: Path, stem: str, report: dict[str, Any], title_zh: str,
                 title_en: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / f"{stem}.json", out_dir / f"{stem}.html"
    json_path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                         encoding="utf-8")
    html_path.write_text(render_html(report, title_zh, title_en), encoding="utf-8")
    return [json_path, html_path]

"""The bilingual (中文/English) certificate page: one self-contained HTML file.

Everything on the page comes from the signed statement, so the page never says
more than the certificate does. No external assets: fonts are the system's
(a CJK font such as Noto Sans CJK must be installed to render Chinese), styles are
inline, and ``@page`` sets A4 so the browser prints it as a document.
"""

from __future__ import annotations

import html
from typing import Any

from harness.cert.keys import display_fingerprint
from harness.cert.profile import CUSTOM, LEVELS, Profile, ProfileError, profile_origin
from harness.cert.provenance import describe, from_vendor_lab
from harness.cert.scenario_page import render_fit
from harness.cert.statement import ACCURACY_FIGURES, LATENCY_FIGURES
from harness.results.case_record import REPORTED_STATUSES

STATUS_ORDER = tuple(s.value for s in REPORTED_STATUSES)
LEVEL_COLOURS = {"full": "#17693a", "limited": "#9a6200", "none": "#a61b1b"}

STYLE = """
@page { size: A4; margin: 14mm 13mm 16mm 13mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "PingFang SC",
       "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif; color: #1b1b1b; margin: 0;
       font-size: 9.5pt; line-height: 1.35; }
main { max-width: 184mm; margin: 0 auto; padding: 6mm 0; }
header { border-bottom: 2.5pt solid #1f3b63; padding-bottom: 3mm; margin-bottom: 4mm;
         display: flex; justify-content: space-between; align-items: flex-end; gap: 6mm; }
h1 { font-size: 19pt; margin: 0; color: #1f3b63; letter-spacing: 0.04em; }
h1 small { display: block; font-size: 11pt; letter-spacing: 0; color: #3a4d68; }
h2 { font-size: 11pt; color: #1f3b63; border-bottom: 0.6pt solid #b9c4d3; margin: 4.5mm 0 1.8mm;
     padding-bottom: 0.6mm; break-after: avoid; }
.issuer { font-size: 10pt; color: #3a4d68; }
.cid { font-family: "DejaVu Sans Mono", monospace; font-size: 10pt; text-align: right; }
.verdict { display: flex; gap: 5mm; align-items: center; border: 1pt solid #c7cfdb;
           border-radius: 2mm; padding: 3mm 4mm; break-inside: avoid; }
.level { color: #fff; border-radius: 1.5mm; padding: 2mm 4mm; font-size: 16pt; font-weight: bold;
         text-align: center; min-width: 58mm; -webkit-print-color-adjust: exact;
         print-color-adjust: exact; }
.level small { display: block; font-size: 10pt; font-weight: normal; }
table { width: 100%; border-collapse: collapse; margin: 1mm 0; }
th, td { border: 0.5pt solid #c7cfdb; padding: 0.9mm 1.6mm; text-align: left; vertical-align: top; }
th { background: #eef2f7; font-weight: 600; -webkit-print-color-adjust: exact;
     print-color-adjust: exact; }
tr { break-inside: avoid; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 34%; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; word-break: break-all; }
.nowrap { white-space: nowrap; word-break: normal; }
.met { color: #17693a; font-weight: 600; } .unmet { color: #a61b1b; font-weight: 600; }
.unmeasured { color: #7a5a00; font-weight: 600; }
.note { color: #555; font-size: 8.5pt; margin: 1mm 0; }
ul.tight { margin: 1mm 0; padding-left: 5mm; }
footer { margin-top: 5mm; border-top: 0.6pt solid #b9c4d3; padding-top: 2mm; font-size: 8.5pt;
         color: #444; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 4mm; }
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _date(stamp: str | None) -> str:
    return (stamp or "")[:10]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _kv(rows: list[tuple[str, Any]], mono: tuple[str, ...] = ()) -> str:
    cells = "".join(
        f"<tr><th>{label}</th><td class=\"{'mono' if label in mono else ''}\">{e(value)}</td></tr>"
        for label, value in rows)
    return f"<table class=\"kv\">{cells}</table>"


def _target(predicate: dict[str, Any]) -> str:
    ident = predicate["target"]["identity"]
    return _kv([
        ("名称 / Name", ident.get("name")),
        ("厂商 / Vendor", ident.get("vendor")),
        ("类别 / Kind", ident.get("kind")),
        ("驱动 / Driver", f"{ident.get('driver_distribution')} {ident.get('driver_version')}"),
        ("运行时 / Runtime", f"{ident.get('runtime')} {ident.get('runtime_version')}"),
        ("设备 / Device", ident.get("device")),
        ("配置 / Configuration", ident.get("configuration")),
        ("目标标识 / Target label", predicate["target"]["label"]),
        *_lab_place(ident.get("place")),
        *_disclosures(predicate["target"].get("capabilities")),
    ])


def _lab_place(place: Any) -> list[tuple[str, Any]]:
    """The labgrid place the board was reached through (``docs/lab.md``), when it was."""
    if not isinstance(place, dict) or not place.get("place"):
        return []
    where = ", ".join(f"{key}: {place[key]}" for key in sorted(place)
                      if key != "place" and isinstance(place[key], str | int | float))
    return [("实验室位置 / Lab place", f"{place['place']}" + (f" ({where})" if where else ""))]


def _disclosures(capabilities: Any) -> list[tuple[str, Any]]:
    """What the driver declares about where the numbers come from and how it adapts
    what a case gives (a simulator computing through another runtime, a scalar fed as a
    one-element tensor): certificates depend on it, so the page says it."""
    extra = (capabilities or {}).get("extra") if isinstance(capabilities, dict) else None
    if not isinstance(extra, dict):
        return []
    rows: list[tuple[str, Any]] = []
    if extra.get("computed_by"):
        rows.append(("实际计算者 / Computed by", extra["computed_by"]))
    adaptations = extra.get("adaptations")
    if isinstance(adaptations, list) and adaptations:
        rows.append(("驱动适配 / Driver adaptations", "; ".join(map(str, adaptations))))
    return rows


def _platform(predicate: dict[str, Any]) -> str:
    env = predicate.get("platform") or {}
    os_info = env.get("os") or {}
    memory = env.get("memory_bytes")
    domestic = os_info.get("domestic_distribution")
    return _kv([
        ("操作系统 / OS", f"{os_info.get('pretty_name') or 'unknown'}"
         + (f" — 信创 / domestic: {domestic}" if domestic else "")),
        ("内核 / Kernel", env.get("kernel")),
        ("架构 / Machine", env.get("machine")),
        ("处理器 / CPU", f"{env.get('cpu_model')} × {env.get('cpu_count')}"),
        ("内存 / Memory", f"{memory / 2**30:.1f} GiB" if isinstance(memory, (int, float))
         and memory else "unknown"),
        ("Python", env.get("python")),
        ("平台指纹 / Platform id", env.get("platform_id")),
    ], mono=("平台指纹 / Platform id",))


def _criterion_state(row: dict[str, Any], level: str) -> str:
    if not row["measured"]:
        return "<span class=\"unmeasured\">未测量 / Not measured</span>"
    met = row["met"].get(level)
    if met is None:
        return "—"
    return "<span class=\"met\">达标 / Met</span>" if met else \
        "<span class=\"unmet\">未达标 / Not met</span>"


def _profile_performance(predicate: dict[str, Any]) -> dict[str, float]:
    performance = predicate["profile"]["definition"].get("performance")
    return dict(performance) if isinstance(performance, dict) else {}


def _rules(predicate: dict[str, Any]) -> dict[str, str]:
    """criterion id -> its measure, described by the measure's class."""
    try:
        profile = Profile.from_dict(predicate["profile"]["definition"])
    except ProfileError:
        return {}
    return {c.id: c.rule.render() for c in profile.criteria}


def _criteria(predicate: dict[str, Any]) -> str:
    rows = []
    rules = _rules(predicate)
    for row in predicate["criteria"]:
        thresholds = row["thresholds"]
        result = (f"{row['passed']}/{row['measured_cases']} = {_percent(row['value'])}"
                  if row["measured"] else e(row["reason"]))
        if row.get("not_applicable"):
            result += (f"<br><span class=\"note\">{row['not_applicable']} 项不适用 / "
                       "not applicable (skipped: not claimed)</span>")
        rule = f"<br><span class=\"note\">{e(rules[row['id']])}</span>" \
            if row["id"] in rules else ""
        rows.append(
            f"<tr><td>{e(row['title_zh'])}<br>{e(row['title_en'])}{rule}</td>"
            f"<td>{e(row['suite'])}</td>"
            f"<td>{result}</td>"
            f"<td class=\"num\">{_percent(thresholds.get('full'))}</td>"
            f"<td class=\"num\">{_percent(thresholds.get('limited'))}</td>"
            f"<td>{_criterion_state(row, 'full')}</td>"
            f"<td>{_criterion_state(row, 'limited')}</td></tr>")
    head = ("<tr><th>判定项 / Criterion</th><th>套件 / Suite</th><th>结果 / Result</th>"
            "<th>完全兼容阈值<br>Full</th><th>基本兼容阈值<br>Limited</th>"
            "<th>完全兼容<br>Full</th><th>基本兼容<br>Limited</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _suites(predicate: dict[str, Any]) -> str:
    head = "".join(f"<th>{s.zh}<br>{s.value}</th>" for s in REPORTED_STATUSES)
    rows = []
    for name, summary in predicate["suites"].items():
        counts = summary["counts"]
        cells = "".join(f"<td class=\"num\">{counts.get(s, 0)}</td>" for s in STATUS_ORDER)
        rows.append(f"<tr><td>{e(name)}</td><td class=\"num\">{summary['cases']}</td>{cells}"
                    f"<td class=\"mono\">{e(', '.join(summary.get('runs', [])))}</td></tr>")
    return (f"<table><tr><th>套件 / Suite</th><th>用例 / Cases</th>{head}"
            f"<th>运行 / Runs</th></tr>{''.join(rows)}</table>")


def _metrics(metrics: dict[str, Any], order: tuple[str, ...] = ()) -> str:
    """``k=v`` figures, those named in ``order`` first and in that order (the signed JSON
    has its keys sorted)."""
    keys = [k for k in order if k in metrics] + sorted(k for k in metrics if k not in order)
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys) or "—"


def _models(predicate: dict[str, Any]) -> str:
    rows = predicate.get("models") or []
    if not rows:
        return ("<p class=\"unmeasured\">未测量：本证书未包含模型套件记录 / Not measured: "
                "this certificate cites no model-suite records.</p>")
    body = "".join(
        f"<tr><td>{e(r['model'])}<br><span class=\"mono\">{e(r['case'])}</span></td>"
        f"<td>{e(r.get('precision') or '—')}</td><td>{e(r['status'])}</td>"
        f"<td>{e(_metrics(r['metrics'], ACCURACY_FIGURES))}</td>"
        f"<td class=\"mono nowrap\">{e((r.get('sha256') or '—')[:12])}</td></tr>" for r in rows)
    return (f"<table><tr><th>模型 / Model</th><th>精度 / Precision</th><th>结果 / Status</th>"
            f"<th>精度指标 / Accuracy metrics</th><th>SHA-256</th></tr>{body}</table>")


def _latency(predicate: dict[str, Any]) -> str:
    latency = predicate.get("latency") or {}
    perf = latency.get("performance") or []
    if perf:
        body = "".join(
            f"<tr><td>{e(r.get('model') or r['case'])}</td><td>{e(r.get('scenario'))}"
            f"{'' if not r.get('batch_size') else ' ×' + e(r['batch_size'])}</td>"
            f"<td>{e(r['status'])}{'' if r.get('valid') is not False else ' (INVALID)'}</td>"
            f"<td>{e(_metrics(r['figures'], LATENCY_FIGURES))}"
            f"{'<br><span class=note>' + e(r['note']) + '</span>' if r.get('note') else ''}"
            "</td></tr>" for r in perf)
        parts = [f"<table><tr><th>模型 / Model</th><th>场景 / Scenario</th><th>结果 / Status"
                 f"</th><th>时延与吞吐 / Latency and throughput</th></tr>{body}</table>"]
    else:
        parts = ["<p class=\"unmeasured\">未测量：本证书未包含性能套件记录 / Not measured: "
                 "this certificate cites no performance-suite records.</p>"]
    settings = latency.get("settings") or {}
    if settings:
        least = _profile_performance(predicate)
        shown = ", ".join(f"{k} ≥ {v:g}" for k, v in sorted(settings.items()))
        required = ", ".join(f"{k} ≥ {v:g}" for k, v in sorted(least.items())) or "—"
        parts.append(f"<p class=\"note\">测量设置（各计时用例的最小值）/ Measured with (least "
                     f"over the timed cases): {e(shown)}; 规范要求 / profile minimum: "
                     f"{e(required)}</p>")
    conformance = latency.get("conformance_run_time") or {}
    if conformance:
        body = "".join(
            f"<tr><td>{e(s)}</td><td class=\"num\">{v['cases']}</td>"
            f"<td class=\"num\">{v['median_ms']:.3f}</td><td class=\"num\">{v['p90_ms']:.3f}</td>"
            f"<td class=\"num\">{v['max_ms']:.3f}</td></tr>" for s, v in conformance.items())
        parts.append(
            "<p class=\"note\">一致性用例单次执行时间（非基准测试）/ Run time of one conformance "
            "case (not a benchmark):</p><table><tr><th>套件 / Suite</th><th>通过用例 / Passed "
            "cases</th><th>中位数 / Median ms</th><th>P90 ms</th><th>最大 / Max ms</th></tr>"
            f"{body}</table>")
    return "".join(parts)


def _limitations(predicate: dict[str, Any]) -> str:
    level = predicate["level"]["id"]
    blockers = predicate.get("blockers") or {}
    missed = {"full": (), "limited": ("full",), "none": ("limited", "full")}.get(level, ())
    parts = []
    for higher in missed:
        shown = blockers.get(higher, [])
        if shown:
            zh, en = LEVELS[higher]
            items = "".join(f"<li>{e(b)}</li>" for b in shown)
            parts.append(f"<h2>限制说明 / Limitations (why not {zh} / {en})</h2>"
                         f"<ul class=\"tight\">{items}</ul>")
    return "".join(parts)


def _not_compatible(predicate: dict[str, Any]) -> str:
    if predicate["level"]["id"] != "none":
        return ""
    return ("<p class=\"unmet\" style=\"font-size:12pt;border:1.5pt solid #a61b1b;"
            "padding:2mm 3mm\">本证书认定：不兼容。该目标未达到任何兼容等级，原因见下文限制说明 / "
            "This certificate states NOT COMPATIBLE: the target reached no compatibility "
            "level; the reasons are listed under Limitations.</p>")


def _evidence(predicate: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class=\"mono\">{e(r['run_id'])}</td><td class=\"num\">{r['target_records']}"
        f"</td><td class=\"mono\">{e(r['records_sha256'])}</td></tr>" for r in predicate["runs"])
    files = predicate["files"]
    counts = ", ".join(f"{k}: {len(v)}" for k, v in files.items())
    return (f"<table><tr><th>运行 / Run</th><th>记录 / Records</th><th>records.jsonl "
            f"SHA-256</th></tr>{rows}</table><p class=\"note\">证书另记录了所用驱动、套件与模型"
            f"文件的 SHA-256 / The certificate also cites the SHA-256 of every driver, suite "
            f"and model file used ({e(counts)}).</p>")


def _custom_profile(predicate: dict[str, Any]) -> str:
    profile = predicate["profile"]
    if profile_origin(profile["name"], profile["version"], profile["sha256"]) != CUSTOM:
        return ""
    return ("<p class=\"unmeasured\">自定义认证规范，并非 Shipei 发布的规范；判定规则以证书内嵌"
            "的规范为准 / Custom profile, not one Shipei publishes: the rules are the ones "
            f"embedded in this certificate (sha256 {e(profile['sha256'][:16])}…).</p>")


def _provenance(predicate: dict[str, Any]) -> str:
    provenance = predicate.get("provenance")
    if not from_vendor_lab(provenance):
        return ""
    return ("<p class=\"unmeasured\">证据来自厂商实验室，非认证中心实验室 / The evidence was made "
            f"in a vendor lab, not the center's: {e(describe(provenance))}</p>")


def _revoked(revocation: dict[str, Any] | None) -> str:
    if not revocation:
        return ""
    return ("<p class=\"unmet\" style=\"font-size:13pt;border:2pt solid #a61b1b;"
            "padding:2mm 3mm\">本证书已被吊销，不再有效 / This certificate has been REVOKED and "
            f"is no longer valid — {e(_date(revocation.get('revoked_at')))}: "
            f"{e(revocation.get('reason'))}</p>")


def render_certificate(statement: dict[str, Any], keyid: str,
                       revocation: dict[str, Any] | None = None) -> str:
    """The page; ``revocation`` (an entry of the center's signed list) puts a revoked
    banner above everything else."""
    p = statement["predicate"]
    level = p["level"]
    colour = LEVEL_COLOURS.get(level["id"], "#333")
    scope = p["scope"]
    profile = p["profile"]
    harness = p.get("harness") or {}
    issuer = p.get("issuer") or {}
    cid = p["certificate_id"]
    ident = p["target"]["identity"]
    banner = "[已吊销 / REVOKED] " if revocation else ""
    source = _revoked(revocation) + _not_compatible(p) + _custom_profile(p) + _provenance(p)
    subset = "" if scope["complete"] else (
        "<p class=\"unmeasured\">本证书基于用例子集，并非完整认证 / This certificate rests on a "
        "subset of the cases and is not a full certification.</p>")
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{banner}{e(cid)} — 兼容性认证证书 / Compatibility Certificate</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
  <div><h1>兼容性认证证书<small>Compatibility Certificate — Shipei 适配</small></h1>
  <div class="issuer">签发机构 / Issued by: {e(issuer.get('name') or '—')}</div></div>
  <div class="cid">证书编号 / Certificate ID<br><strong>{e(cid)}</strong></div>
</header>
<section class="verdict">
  <div class="level" style="background:{colour}">{e(level['zh'])}<small>{e(level['en'])}</small>
  </div>
  <div>
    <div><strong>{e(ident.get('name'))}</strong> · {e(ident.get('vendor'))} ·
      {e(ident.get('runtime'))} {e(ident.get('runtime_version'))}</div>
    <div>认证规范 / Profile: {e(profile['title_zh'])} / {e(profile['title_en'])}
      (<span class="mono">{e(profile['name'])} v{e(profile['version'])}</span>)</div>
    <div>范围 / Scope: {e(scope['title_zh'])}<br>{e(scope['title_en'])}</div>
    <div>有效期 / Valid: {e(_date(p['issued_at']))} — {e(_date(p['expires_at']))}</div>
  </div>
</section>
{source}{subset}{render_fit(p)}
<div class="grid">
<section><h2>认证对象 / Certified target</h2>{_target(p)}</section>
<section><h2>平台 / Platform</h2>{_platform(p)}</section>
</div>
<section><h2>判定标准 / Criteria</h2>{_criteria(p)}
<p class="note">等级由记录计算得出，而非人工填写 / The level is computed from the records,
never typed in.</p></section>
{_limitations(p)}
<section><h2>套件 / Suites</h2>{_suites(p)}</section>
<section><h2>模型 / Models</h2>{_models(p)}</section>
<section><h2>时延 / Latency</h2>{_latency(p)}</section>
<section><h2>证据 / Evidence</h2>{_evidence(p)}</section>
<section><h2>有效期与签名 / Validity and signature</h2>{_kv([
    ("签发日期 / Issued", p['issued_at']),
    ("有效期至 / Expires", p['expires_at']),
    ("签名密钥指纹 / Signing key fingerprint", display_fingerprint(keyid)),
    ("评定算法版本 / Evaluator version", p.get("evaluator_version", "1")),
    ("测试工具 / Harness", f"shipei {harness.get('version')} "
                          f"(commit {harness.get('git_commit') or 'unknown'})"),
], mono=("签名密钥指纹 / Signing key fingerprint",))}</section>
<footer>核验方法 / How to verify (offline):
<span class="mono">shipei cert verify {e(cid)}.dsse.json --pubkey center.pub
--records results/</span><br>
本页面内容均来自已签名的证书文件；以证书文件核验结果为准 / Everything on this page comes from
the signed certificate file; the verification of that file is authoritative.</footer>
</main>
</body>
</html>
"""

"""A static certificate registry a center can host as it is (any web server, or file://).

Layout::

    registry/
      index.html              search by vendor, target and level; no external assets
      index.json              REGISTRY_SCHEMA_VERSION, issuer key, one entry per certificate
      center.pub              the key every certificate here verifies against
      revocations.dsse.json   the signed revocation list
      certificates/<id>.dsse.json and <id>.html
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from harness.cert.keys import display_fingerprint, fingerprint, public_pem
from harness.cert.profile import CUSTOM, profile_origin
from harness.cert.revocation import (
    REVOCATIONS_FILE,
    RevocationError,
    find_revocation,
    load_revocations,
    newer_list,
)
from harness.results.record_files import now_iso, write_json

REGISTRY_SCHEMA_VERSION = "1.0"
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
PUBLIC_KEY_FILE = "center.pub"
CERTIFICATES = "certificates"


class CertificateRegistryError(Exception):
    """A registry folder that belongs to another key or is damaged."""


def _load_index(root: Path, keyid: str, issuer: str) -> dict[str, Any]:
    path = root / INDEX_JSON
    if not path.exists():
        return {"schema_version": REGISTRY_SCHEMA_VERSION,
                "issuer": {"name": issuer, "keyid": keyid, "public_key": PUBLIC_KEY_FILE},
                "updated_at": None, "certificates": []}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise CertificateRegistryError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("certificates"), list):
        raise CertificateRegistryError(f"{path} is not a registry index")
    if (index.get("issuer") or {}).get("keyid") != keyid:
        raise CertificateRegistryError(f"registry {root} belongs to key "
                            f"{str((index.get('issuer') or {}).get('keyid'))[:16]}..., not "
                            f"{keyid[:16]}...")
    return index


def entry_for(statement: dict[str, Any]) -> dict[str, Any]:
    p = statement["predicate"]
    ident = p["target"]["identity"]
    cid = p["certificate_id"]
    env = p.get("platform") or {}
    profile = p["profile"]
    origin = profile_origin(profile["name"], profile["version"], profile["sha256"])
    return {
        "id": cid, "vendor": ident.get("vendor"), "target": ident.get("name"),
        "label": p["target"]["label"], "kind": ident.get("kind"),
        "runtime": f"{ident.get('runtime')} {ident.get('runtime_version')}",
        "device": ident.get("device"), "level": p["level"]["id"],
        "level_zh": p["level"]["zh"], "level_en": p["level"]["en"],
        "profile": f"{profile['name']} v{profile['version']}"
                   + (" (自定义 / custom)" if origin == CUSTOM else ""),
        "custom_profile": origin == CUSTOM,
        "scope": p["scope"]["name"], "complete_scope": p["scope"]["complete"],
        "platform": f"{(env.get('os') or {}).get('pretty_name')} / {env.get('cpu_model')}",
        "issued_at": p["issued_at"], "expires_at": p["expires_at"],
        "status": "valid", "revocation_reason": None,
        "certificate": f"{CERTIFICATES}/{cid}.dsse.json", "page": f"{CERTIFICATES}/{cid}.html",
    }


def apply_revocations(index: dict[str, Any], revocations: dict[str, Any] | None) -> None:
    """Every entry's status from the registry's signed list, and from nothing else."""
    revoked = {e["certificate_id"]: e for e in (revocations or {}).get("revoked", [])}
    for entry in index["certificates"]:
        hit = revoked.get(entry["id"])
        entry["status"] = "revoked" if hit else "valid"
        entry["revocation_reason"] = hit["reason"] if hit else None


def registry_revocations(root: Path, public_key: Ed25519PublicKey,
                         incoming: Path | None = None) -> dict[str, Any] | None:
    """The registry's signed revocation list, replaced by ``incoming`` when that is a newer
    list of the same center that lifts no revocation (an older copy is ignored)."""
    held = root / REVOCATIONS_FILE
    try:
        current = load_revocations(held, public_key) if held.exists() else None
        offered = None
        if incoming is not None and incoming.exists() \
                and incoming.resolve() != held.resolve():
            offered = load_revocations(incoming, public_key)
        chosen = newer_list(current, offered)
    except RevocationError as exc:
        raise CertificateRegistryError(str(exc)) from None
    if chosen is not None and chosen is offered:
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(incoming, held)  # type: ignore[arg-type]
    return chosen


def publish(root: Path, certificate: Path, page: Path | None, statement: dict[str, Any],
            public_key: Ed25519PublicKey, revocations_file: Path | None = None) -> Path:
    """Add one verified certificate to the registry at ``root``; returns index.html.
    A certificate the registry's list (or a newer one offered beside it) revokes is
    refused."""
    keyid = fingerprint(public_key)
    issuer = (statement["predicate"].get("issuer") or {}).get("name", "")
    index = _load_index(root, keyid, issuer)
    revocations = registry_revocations(root, public_key, revocations_file)
    entry = entry_for(statement)
    hit = find_revocation(revocations, entry["id"]) if revocations else None
    if hit:
        raise CertificateRegistryError(f"certificate {entry['id']} was revoked on "
                                       f"{hit['revoked_at']}: {hit['reason']}; not published")
    (root / CERTIFICATES).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(certificate, root / entry["certificate"])
    if page is not None and page.exists():
        shutil.copyfile(page, root / entry["page"])
    else:
        entry["page"] = None
    (root / PUBLIC_KEY_FILE).write_text(public_pem(public_key), encoding="ascii")
    index["certificates"] = [e for e in index["certificates"] if e["id"] != entry["id"]]
    index["certificates"].append(entry)
    index["certificates"].sort(key=lambda e: e["issued_at"], reverse=True)
    return _write(root, index, revocations, public_key)


def refresh(root: Path, public_key: Ed25519PublicKey, revocations_file: Path | None = None
            ) -> Path:
    """Take a newer revocation list in, re-mark the entries, rewrite index.json/.html."""
    index = _load_index(root, fingerprint(public_key), "")
    return _write(root, index, registry_revocations(root, public_key, revocations_file),
                  public_key)


def mark_revoked_page(certificate: Path, public_key: Ed25519PublicKey,
                      revocation: dict[str, Any]) -> Path | None:
    """Re-render the page beside ``certificate`` with its revocation on top (the page says
    what the list says); None when there is no certificate there to render from."""
    from harness.cert.page import render_certificate
    from harness.cert.verify import VerificationError, open_certificate

    try:
        statement = open_certificate(certificate.read_bytes(), public_key)
    except (OSError, VerificationError):
        return None
    page = certificate.with_name(certificate.name.replace(".dsse.json", ".html"))
    page.write_text(render_certificate(statement, fingerprint(public_key), revocation),
                    encoding="utf-8")
    return page


def _write(root: Path, index: dict[str, Any], revocations: dict[str, Any] | None,
           public_key: Ed25519PublicKey) -> Path:
    apply_revocations(index, revocations)
    for entry in index["certificates"]:
        hit = find_revocation(revocations, entry["id"]) if revocations else None
        if hit and entry.get("page"):
            mark_revoked_page(root / entry["certificate"], public_key, hit)
    index["updated_at"] = now_iso()
    write_json(root / INDEX_JSON, index)
    out = root / INDEX_HTML
    out.write_text(render_index(index), encoding="utf-8")
    return out


def _script_json(data: Any) -> str:
    """JSON safe to embed in a <script> element."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


INDEX_STYLE = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei",
       sans-serif; margin: 2em auto; max-width: 1100px; color: #1b1b1b; padding: 0 1em; }
h1 { color: #1f3b63; margin-bottom: 0.2em; }
.key { font-family: monospace; font-size: 0.85em; color: #444; }
form { display: flex; gap: 0.8em; margin: 1em 0; flex-wrap: wrap; }
input, select { font: inherit; padding: 0.3em 0.5em; max-width: 22em; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { border: 1px solid #c7cfdb; padding: 0.35em 0.5em; text-align: left; }
th { background: #eef2f7; }
.full { color: #17693a; font-weight: 600; } .limited { color: #9a6200; font-weight: 600; }
.none { color: #a61b1b; font-weight: 600; } .revoked { text-decoration: line-through; }
.status-revoked, .status-expired { color: #a61b1b; font-weight: 600; }
"""

INDEX_SCRIPT = """
const data = JSON.parse(document.getElementById('registry-data').textContent);
const rows = document.getElementById('rows');
const q = document.getElementById('q'), level = document.getElementById('level');
const entities = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'};
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => entities[c]);
function status(c) {
  if (c.status === 'revoked') {
    return ['revoked', '已撤销 / Revoked: ' + (c.revocation_reason || '')];
  }
  if (new Date(c.expires_at) < new Date()) return ['expired', '已过期 / Expired'];
  return ['valid', '有效 / Valid'];
}
function render() {
  const words = q.value.toLowerCase().split(/\\s+/).filter(Boolean);
  const shown = data.certificates.filter(c => {
    const hay = [c.id, c.vendor, c.target, c.label, c.runtime, c.kind, c.level, c.level_zh,
                 c.level_en, c.platform].join(' ').toLowerCase();
    return (!level.value || c.level === level.value) && words.every(w => hay.includes(w));
  });
  rows.innerHTML = shown.map(c => {
    const [cls, text] = status(c);
    const page = c.page ? `<a href="${esc(c.page)}">${esc(c.id)}</a>` : esc(c.id);
    return `<tr class="${cls === 'revoked' ? 'revoked' : ''}">` +
      `<td>${page}</td><td>${esc(c.vendor)}</td>` +
      `<td>${esc(c.target)}<br><small>${esc(c.runtime)}</small></td><td>${esc(c.kind)}</td>` +
      `<td class="${esc(c.level)}">${esc(c.level_zh)}<br><small>${esc(c.level_en)}</small></td>` +
      `<td>${esc(c.profile)} · ${esc(c.scope)}</td><td>${esc(c.platform)}</td>` +
      `<td>${esc(c.issued_at.slice(0, 10))} — ${esc(c.expires_at.slice(0, 10))}</td>` +
      `<td class="status-${cls}">${esc(text)}</td>` +
      `<td><a href="${esc(c.certificate)}">DSSE</a></td></tr>`;
  }).join('');
  document.getElementById('count').textContent = `${shown.length} / ${data.certificates.length}`;
}
q.addEventListener('input', render); level.addEventListener('change', render); render();
"""


def render_index(index: dict[str, Any]) -> str:
    issuer = index.get("issuer") or {}
    name = html.escape(issuer.get("name") or "Shipei")
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} — 兼容性认证名录 / Compatibility certificate registry</title>
<style>{INDEX_STYLE}</style></head>
<body>
<h1>兼容性认证名录 / Compatibility certificate registry</h1>
<div>{name}</div>
<div class="key">签名公钥 / Signing key: <a href="{PUBLIC_KEY_FILE}">{PUBLIC_KEY_FILE}</a>
  {html.escape(display_fingerprint(str(issuer.get("keyid", ""))))}<br>
  撤销列表 / Revocation list: <a href="{REVOCATIONS_FILE}">{REVOCATIONS_FILE}</a> ·
  数据 / Data: <a href="{INDEX_JSON}">{INDEX_JSON}</a></div>
<form onsubmit="return false">
  <label>搜索 / Search (厂商 vendor, 目标 target, …)
    <input id="q" type="search" placeholder="e.g. Microsoft onnxruntime"></label>
  <label>等级 / Level <select id="level">
    <option value="">全部 / All</option>
    <option value="full">完全兼容 / Fully compatible</option>
    <option value="limited">基本兼容 / Compatible with limitations</option>
    <option value="none">不兼容 / Not compatible</option></select></label>
  <span id="count"></span>
</form>
<table><thead><tr><th>证书 / Certificate</th><th>厂商 / Vendor</th><th>目标 / Target</th>
<th>类别 / Kind</th><th>等级 / Level</th><th>规范 / Profile</th><th>平台 / Platform</th>
<th>有效期 / Validity</th><th>状态 / Status</th><th>文件 / File</th></tr></thead>
<tbody id="rows"></tbody></table>
<p class="key">核验 / Verify: shipei cert verify certificates/ID.dsse.json --pubkey center.pub
  --revocations revocations.dsse.json</p>
<script type="application/json" id="registry-data">{_script_json(index)}</script>
<script>{INDEX_SCRIPT}</script>
</body></html>
"""

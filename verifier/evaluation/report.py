"""docs/quality.json and docs/quality.md: merging evaluation rows and rendering them.

The JSON is the record; the Markdown is rendered from the JSON alone, so re-rendering an
unchanged JSON gives identical bytes. Layout of the JSON:

    {"format": 1, "generated_by": "hallmark evaluate", "rows": [row, ...],
     "sections": {"forgery": {...}}}

with rows as described in `verifier.evaluation` (each carrying its own "run": date, machine,
quick), ordered by scheme (the order of `verifier.schemes.KNOWN`) and then as produced.
"sections" (optional) holds evaluations that are not per-scheme rows, by name (SECTIONS):
"forgery" is `verifier.evaluation.forgery.evaluate`'s result, rendered as "## Forgery";
"removal" is `verifier.evaluation.removal.evaluate`'s result, rendered as "## Removal suite"
with one robustness-curve SVG per scheme written beside the report (curves/<scheme>.svg).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from verifier.schemes import KNOWN

FORMAT = 1
GENERATED_BY = "hallmark evaluate"
SECTIONS = ("forgery", "removal")  # evaluations that write a section of their own, not scheme rows

# Descriptions of the usual attack names (rows may use others; they are shown as they are).
ATTACKS = {
    "finetune_all": "fine-tune all layers, 5 epochs, fresh Adam (lr 1e-3), full training set",
    "finetune_all_strong": "fine-tune all layers, 20 epochs, fresh Adam (lr 3e-3)",
    "finetune_10pct_lr1e-2": ("fine-tune all layers, 10 epochs, fresh Adam (lr 1e-2), first 10 % "
                              "of the training set (issue 11)"),
    "finetune_last": "fine-tune the last layer only, 5 epochs, fresh Adam (lr 1e-3)",
    "retrain_dense": "re-initialize every dense layer and retrain only those, 20 epochs",
    "prune_50": "zero the 50 % smallest-magnitude weights (global)",
    "int8": "symmetric per-tensor int8 round-trip of every parameter",
}


class ReportError(ValueError):
    """A quality.json that cannot be read or a row that does not follow the schema."""


_REQUIRED = ("scheme", "model", "acc_clean", "acc_marked", "delta_pp", "marked", "attacks",
             "fpr", "queries_for_1e-6", "notes", "seconds")


def check_row(row: Mapping[str, Any]) -> None:
    """Raise ReportError naming the first missing or malformed field of a row."""
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ReportError(f"row for `{row.get('scheme', '?')}` lacks {', '.join(missing)} "
                          "(schema: verifier.evaluation)")
    for k in ("log10_p", "null", "statistic", "n"):
        if k not in row["marked"]:
            raise ReportError(f"row for `{row['scheme']}`: marked lacks `{k}`")
    for a in row["attacks"]:
        for k in ("name", "attacker_acc", "log10_p", "detected"):
            if k not in a:
                raise ReportError(f"row for `{row['scheme']}`: an attack lacks `{k}`")
    for k in ("pairs", "null_log10_p", "alpha", "ks_p"):
        if k not in row["fpr"]:
            raise ReportError(f"row for `{row['scheme']}`: fpr lacks `{k}`")


def machine() -> dict[str, Any]:
    """Where a run happened: platform, CPU, cores, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def run_info(quick: bool, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The "run" entry added to each row: UTC date (RFC 3339), machine, quick flag."""
    now = now or _dt.datetime.now(_dt.UTC)
    return {"date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(), "quick": quick}


def load(path: Path) -> list[dict[str, Any]]:
    """The rows of an existing quality.json ([] when the file does not exist)."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        rows = doc["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{path} is not a quality.json written by `hallmark evaluate` "
                          f"({type(e).__name__}: {e}); move it away to start afresh") from None
    if not isinstance(rows, list):
        raise ReportError(f"{path}: `rows` must be a list")
    return rows


def load_sections(path: Path) -> dict[str, Any]:
    """The "sections" of an existing quality.json ({} when there are none or no file)."""
    if not path.exists():
        return {}
    sections = json.loads(path.read_text()).get("sections") or {}
    if not isinstance(sections, dict):
        raise ReportError(f"{path}: `sections` must be an object")
    return sections


def merge(old: Iterable[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replace every old row of a scheme that has new rows; keep the others.

    Returns:
        Rows ordered by scheme (KNOWN order, unknown names last, alphabetically), then in
        the order they were produced.

    Example:
        >>> merge([{"scheme": "lsb", "model": "a"}, {"scheme": "uchida", "model": "old"}],
        ...       [{"scheme": "uchida", "model": "new"}])
        [{'scheme': 'uchida', 'model': 'new'}, {'scheme': 'lsb', 'model': 'a'}]
    """
    rerun = {r["scheme"] for r in new}
    rows = [dict(r) for r in old if r["scheme"] not in rerun] + [dict(r) for r in new]

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, str, int]:
        i, r = item
        s = r["scheme"]
        return (KNOWN.index(s) if s in KNOWN else len(KNOWN), s, i)

    return [r for _, r in sorted(enumerate(rows), key=rank)]


def to_json(rows: Sequence[Mapping[str, Any]], sections: Mapping[str, Any] | None = None) -> str:
    """The quality.json text (sorted keys, -inf/inf/nan written as strings)."""
    doc: dict[str, Any] = {"format": FORMAT, "generated_by": GENERATED_BY, "rows": _json_safe(list(rows))}
    if sections:
        doc["sections"] = _json_safe(dict(sections))
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write(md_path: Path, rows: Sequence[Mapping[str, Any]],
          sections: Mapping[str, Any] | None = None) -> Path:
    """Write quality.json beside `md_path` and render `md_path` from it; return the JSON path."""
    json_path = md_path.with_suffix(".json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    text = to_json(rows, sections)
    _atomic_write(json_path, text)
    doc = json.loads(text)
    if (doc.get("sections") or {}).get("removal"):
        from verifier.evaluation import curves

        curves.write(doc["sections"]["removal"], md_path.parent)
    _atomic_write(md_path, render(doc["rows"], json_name=json_path.name,
                                  sections=doc.get("sections")))
    return json_path


def render(rows: Sequence[Mapping[str, Any]], json_name: str = "quality.json",
           sections: Mapping[str, Any] | None = None) -> str:
    """The Markdown report for `rows` (a pure function of the rows).

    Example:
        >>> render([]).splitlines()[0]
        '# Watermark quality, measured'
    """
    for r in rows:
        check_row(r)
    out = ["# Watermark quality, measured", "",
           f"Generated by `{GENERATED_BY}` from `{json_name}`; do not edit by hand "
           "(re-run the command). p-values are shown as log10 p; an attacked model is "
           "\"detected\" when p ≤ 1e-6. Accuracies are top-1 on the held-out test split.", ""]
    forged = (render_forgery((sections or {}).get("forgery"))
              + render_removal((sections or {}).get("removal")))
    if not rows:
        return "\n".join(out + ["No rows yet: run `hallmark evaluate --schemes ...`.", ""] + forged)
    out += ["## Fidelity and power", "",
            "| scheme | model | acc clean | acc marked | Δ pp | marked: statistic / n | log10 p | null | queries for p<1e-6 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["marked"]
        out.append(f"| {r['scheme']} | {r['model']} | {_pct(r['acc_clean'])} | "
                   f"{_pct(r['acc_marked'])} | {_num(r['delta_pp'], '+.2f')} | "
                   f"{_num(m['statistic'], 'g')} / {m['n']} | {_lp(m['log10_p'])} | {m['null']} | "
                   f"{'n/a' if r['queries_for_1e-6'] is None else r['queries_for_1e-6']} |")
    out += ["", "## Removal attacks", "",
            "| scheme | model | attack | attacker acc | log10 p | detected at 1e-6 |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        for a in r["attacks"]:
            out.append(f"| {r['scheme']} | {r['model']} | {a['name']} | {_pct(a['attacker_acc'])} | "
                       f"{_lp(a['log10_p'])} | {'yes' if a['detected'] else '**no**'} |")
    used = sorted({a["name"] for r in rows for a in r["attacks"]} & set(ATTACKS))
    if used:
        out += [""] + [f"- `{n}`: {ATTACKS[n]}" for n in used]
    out += ["", "## False positives under H0 (independent model, fresh key)", "",
            "| scheme | model | pairs | FP at 1e-3 (95 % upper) | FP at 1e-6 (95 % upper) | smallest null p (log10) | KS p (one-sided) | KS p (randomized, two-sided) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fpr"]
        cells = [_fp(f["alpha"].get(k)) for k in ("1e-3", "1e-6")]
        smallest = min(f["null_log10_p"], default=None, key=_float)
        out.append(f"| {r['scheme']} | {r['model']} | {f['pairs']} | {cells[0]} | {cells[1]} | "
                   f"{'n/a' if smallest is None else _lp(smallest)} | {_num(f['ks_p'], '.3g')} | "
                   f"{_num(f.get('ks_randomized_p'), '.3g')} |")
    out += ["", "## Notes", ""]
    for r in rows:
        out.append(f"**{r['scheme']}, {r['model']}** ({_num(r['seconds'], '.0f')} s)")
        out.append("")
        out += [f"- {n}" for n in r["notes"]] or ["- (none)"]
        out.append("")
    out += forged
    out += ["## Runs", "", "| scheme | model | date (UTC) | quick | machine |", "|---|---|---|---|---|"]
    for r in rows:
        run = r.get("run") or {}
        mach = run.get("machine") or {}
        where = (f"{mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, {mach.get('platform', '?')}, "
                 f"torch {mach.get('torch', '?')} ({mach.get('torch_threads', '?')} thread(s))")
        out.append(f"| {r['scheme']} | {r['model']} | {run.get('date', '?')} | "
                   f"{'yes' if run.get('quick') else 'no'} | {where if mach else '?'} |")
    return "\n".join(out) + "\n"


def render_forgery(section: Mapping[str, Any] | None) -> list[str]:
    """The "## Forgery" lines for the forgery section ([] without one)."""
    if not section:
        return []
    run = section.get("run") or {}
    out = ["## Forgery", "",
           "Can a registrant manufacture an attribution? Keys go through the upload checks in "
           "order (format, re-derivation of the seeded material, the forgery-cost floor of "
           f"{section['floor_bits']} bits, screening against a reference panel of "
           f"{len(section['panel'])} independent models at p ≤ {section['threshold']:g}). "
           f"Run {run.get('date', '?')}{' (quick)' if section.get('quick') else ''}, "
           f"{_num(section.get('seconds'), '.0f')} s.", "",
           "| honest keys | keys | refused (false refusals) | screened | worst panel log10 p |",
           "|---|---|---|---|---|"]
    for variant, h in section["honest"].items():
        worst = h.get("worst_panel_log10_p")
        out.append(f"| trigger_set {variant} | {h['keys']} | {h['refused']} | {h['screened']} | "
                   f"{'n/a (inputs from the seed)' if worst is None else _lp(worst)} |")
    out += ["", "| scheme | forgery | what the forger does | should be stopped by | outcome | "
            "victims attributed (p ≤ floor) | victims' log10 p |", "|---|---|---|---|---|---|---|"]
    for r in section["red_team"]:
        outcome = f"refused: {r['stage']}" if r["outcome"] == "refused" else "**accepted**"
        logs = r.get("victims_log10_p")
        victims = "n/a (not parsed)" if logs is None else f"{r['victims_attributed']} of {len(logs)}"
        shown = "n/a" if logs is None else ", ".join(_lp(v) for v in logs)
        out.append(f"| {r['scheme']} | `{r['case']}` | {r['attack']} | {r['expect']} | {outcome} | "
                   f"{victims} | {shown} |")
    out += [""] + [f"- {n}" for n in section.get("notes", [])] + [""]
    return out


def ordered_schemes(section: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A removal section's (target id, data) pairs in KNOWN order of their scheme, then by id
    (the JSON stores them sorted by id)."""
    def rank(name: str) -> tuple[int, str]:
        scheme = section["schemes"][name].get("scheme", name)
        return (KNOWN.index(scheme) if scheme in KNOWN else len(KNOWN), name)

    return [(n, section["schemes"][n]) for n in sorted(section["schemes"], key=rank)]


def render_removal(section: Mapping[str, Any] | None) -> list[str]:
    """The "## Removal suite" lines for the removal section ([] without one).

    Per scheme: the curve (curves/<scheme>.svg, written by `write`), then one table row per
    attack with every strength's log10 p and attacker accuracy; attacks that do not apply
    give their reason.
    """
    if not section:
        return []
    run = section.get("run") or {}
    described = section.get("attacks") or {}
    out = ["## Removal suite", "",
           f"`hallmark evaluate --schemes removal{' --quick' if section.get('quick') else ''}`: "
           f"every attack swept over its strength on each scheme's marked digits MLP. Run "
           f"{run.get('date', '?')}{' (quick)' if section.get('quick') else ''}, "
           f"{_num(section.get('seconds'), '.0f')} s. Each cell is \"strength: log10 p "
           "(attacker accuracy)\"; bold when the mark is missed (p > 1e-6).", ""]
    for scheme, data in ordered_schemes(section):
        out += [f"### {data.get('scheme', scheme)}: {data['model']}", "",
                f"Marked model: accuracy {_pct(data['acc_marked'])}, log10 p "
                f"{_lp(data['marked_log10_p'])}.", "",
                f"![robustness curves of {scheme}](curves/{scheme}.svg)", "",
                "| attack | strength | points | detected at every strength |",
                "|---|---|---|---|"]
        for a in data["attacks"]:
            axis = a.get("axis") or (described.get(a["name"]) or {}).get("axis", "")
            if not a.get("applies"):
                out.append(f"| {a['name']} | {axis} | n/a: {a.get('reason', '')} | n/a |")
                continue
            cells = []
            for p in a["points"]:
                cell = f"{p['label']}: {_lp(p['log10_p'])} ({_pct(p['attacker_acc'])})"
                if "attacker_log10_p" in p:
                    cell += f", attacker's own mark {_lp(p['attacker_log10_p'])}"
                cells.append(cell if p["detected"] else f"**{cell}**")
            every = all(p["detected"] for p in a["points"])
            out.append(f"| {a['name']} | {axis} | {'; '.join(cells)} | "
                       f"{'yes' if every else '**no**'} |")
        out += [""] + [f"- {n}" for n in data.get("notes", [])] + ([""] if data.get("notes") else [])
    out += ["Attacks:", ""] + [f"- `{n}`: {d['description']}" for n, d in described.items()]
    out += [""] + [f"- {n}" for n in section.get("notes", [])] + [""]
    return out


# ---------------------------------------------------------------------------------------------

def _float(v: Any) -> float:
    return float(v)  # also parses the "-inf" strings of to_json


def _lp(v: Any) -> str:
    x = _float(v)
    return "-inf" if x == -math.inf else f"{x:.1f}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f} %"


def _num(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _fp(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "n/a"
    return f"{entry['false_positives']} ({100 * entry['upper95']:.2f} %)"


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "-inf", "inf", "nan": JSON has no such numbers
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

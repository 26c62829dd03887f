"""The readable view of a validation report (the JSON report is the record)."""

from __future__ import annotations

__all__ = ["render_table"]

MAX_LISTED = 10  # files listed per failing check; the JSON report lists them all


def _row(cells, widths) -> str:
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def _table(header, rows) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return [_row(header, widths), _row(["-" * w for w in widths], widths)] + [_row(r, widths) for r in rows]


def render_table(report: dict) -> str:
    out = [f"{report['files']} files: {report['usable']} usable ({report['hours']:.2f} h), "
           f"{report['with_errors']} with errors, {report['with_warnings']} usable with warnings", ""]
    rows = []
    for dialect, genders in sorted(report["corpus"].items()):
        for gender, c in sorted(genders.items(), key=lambda kv: (kv[0] != "all", kv[0])):
            rows.append([dialect if gender == "all" else f"  {gender}", f"{c['hours']:.2f}", c["utterances"], c["speakers"]])
    if rows:
        out += _table(["dialect / gender", "hours", "utterances", "speakers"], rows) + [""]
    bal = report["balance"]
    if bal:
        rows = [[d, f"{b['hours']:.2f}", f"{100 * b['share']:.0f}%",
                 "-" if b["female_share"] is None else f"{100 * b['female_share']:.0f}%",
                 "-" if b["target_hours"] is None else f"{b['target_hours']:g}",
                 "-" if b["met"] is None else ("yes" if b["met"] else "NO")] for d, b in sorted(bal.items())]
        out += _table(["balance", "hours", "share", "female", "target h", "met"], rows) + [""]
    low = report["low_data_speakers"]
    if low:
        out.append(f"{len(low)} speaker(s) with less than {report['thresholds']['min_speaker_seconds']:g} s of usable audio: "
                   + ", ".join(f"{x['speaker']} ({x['seconds']:.0f} s)" for x in low[:MAX_LISTED])
                   + (" …" if len(low) > MAX_LISTED else ""))
        out.append("")
    if report["failures"]:
        out += _table(["check", "severity", "files"],
                      [[k, report["severity"][k], len(v)] for k, v in report["failures"].items()]) + [""]
        for check, items in report["failures"].items():
            out.append(f"{check} ({report['severity'][check]}):")
            for it in items[:MAX_LISTED]:
                where = it.get("audio") or f"manifest line {it.get('line')}"
                out.append(f"  {where}: {it['detail']}")
            if len(items) > MAX_LISTED:
                out.append(f"  … {len(items) - MAX_LISTED} more in the JSON report")
        out.append("")
    out.append("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["fail_reasons"]))
    return "\n".join(out)

"""Render a study's report as ``report.html`` (self-contained) and ``report.md`` (the same content, for GitHub).

The first screen answers the question: one line per finding and model with its verdict as a badge, the claim in the
paper's words and the one number that decided it; then the tier, the seeds and what was not testable. Below it, one
card per finding (the votes, the evidence with intervals, chance floors and where each threshold comes from, the
decision rule folded once), the run and fine-tune tables, the figures, then every detail table. No table cell runs
over about 40 words: longer text goes into lists under the tables or into ``<details>``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from grokscope.reporting.findings import clip_words, outcome, reason

BADGE = {"supported": "#1a7f37", "partly supported": "#9a6700", "contradicted": "#cf222e",
         "undecided at this n": "#0969da", "not testable": "#6e7781"}
EVIDENCE = [("subject", "subject"), ("measure", "measure"), ("value", "value"), ("95% interval", "95% interval"),
            ("n", "n"), ("chance floor (step 0)", "chance floor"), ("needs", "needs"), ("outcome", "outcome"),
            ("threshold source", "threshold from")]


@dataclass
class Report:
    """Everything a rendering shows, already computed."""

    name: str
    meta: list[str]  # the tier, the seeds, the scope: one sentence each
    findings: list[dict]
    runs: list[dict]
    finetunes: list[dict]
    figures: list[tuple[Path, str, str]]  # (file, title, caption)
    sections: list[tuple[str, list[dict], str]]  # (title, rows, note) of the detail tables
    provenance: dict
    notes: list[str] = field(default_factory=list)  # run-level sentences (milestones per run)


def finding_label(f: dict) -> str:
    return f"Finding {f['finding']} · {f.get('model', '')}"


def _by_number(findings: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for f in findings:
        out.setdefault(f["finding"], []).append(f)
    return out


UNTESTABLE_WORDS = 30  # one sentence each on the first screen; the card has the whole reason


def _untestable(findings: list[dict]) -> list[str]:
    return [f"{finding_label(f)} is not testable: {clip_words(reason(f['verdict']), UNTESTABLE_WORDS)}."
            for f in findings if outcome(f["verdict"]) == "not testable" and reason(f["verdict"])]


def _evidence_rows(f: dict) -> list[dict]:
    return [{label: c.get(key, "-") for key, label in EVIDENCE} for c in f.get("checks", [])]


# ------------------------------------------------------------------------------------------------ markdown
def _md_cell(v) -> str:
    return (f"{v:.2f}" if isinstance(v, float) else str(v)).replace("|", "/").replace("\n", " ")


def table_md(rows: list[dict]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    out = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return out + "".join("| " + " | ".join(_md_cell(r.get(c, "")) for c in cols) + " |\n" for r in rows)


def first_screen_md(r: Report) -> str:
    rows = [{"verdict": f"**{outcome(f['verdict'])}**", "finding": finding_label(f), "claim": f["claim"],
             "decided by": f["decided_by"]} for f in r.findings]
    out = [" ".join(r.meta) + "\n", table_md(rows)]
    untestable = _untestable(r.findings)
    if untestable:
        out.append("".join(f"- {u}\n" for u in untestable))
    return "\n".join(out)


def cards_md(r: Report) -> str:
    out = []
    for n, group in _by_number(r.findings).items():
        out.append(f"### Finding {n}: {group[0]['claim']}\n\n{group[0].get('source', 'He et al.')}: "
                   f"{group[0]['paper']}.\n")
        for f in group:
            out.append(f"#### {f.get('model', '')} ({f.get('scope', '')}): **{f['verdict']}**\n")
            if f.get("votes"):
                out.append(table_md([{"vote": v["vote"], "outcome": v["outcome"], "number": v["number"]}
                                     for v in f["votes"]]))
            if f.get("checks"):
                out.append(table_md(_evidence_rows(f)))
            details = f.get("details") or [f["measured"]]
            if any(details):
                out.append("Everything measured:\n\n" + "".join(f"- {p}\n" for p in details))
        out.append(f"Decision rule: {group[0]['rule']}.\n")
    return "\n".join(out)


def markdown(r: Report) -> str:
    md = [f"# grokscope study report: {r.name}\n", first_screen_md(r), "\n## Findings\n", cards_md(r),
          "\n## Runs\n", table_md(r.runs), "\n".join(f"- {n}" for n in r.notes) + "\n",
          "\n## Fine-tunes (He et al.'s categories)\n", table_md(r.finetunes), "\n## Figures\n"]
    for file, title, caption in r.figures:
        md.append(f"### {title}\n\n![{title}](figures/{Path(file).name})\n\n{caption}\n")
    for title, rows, note in r.sections:
        md += [f"\n## {title}\n", table_md(rows)]
        if note and rows:
            md.append(note + "\n")
    md += ["\n## Provenance\n", "```json\n" + json.dumps(r.provenance, indent=2, default=str) + "\n```\n"]
    return "\n".join(md)


# ------------------------------------------------------------------------------------------------ html
def _e(x) -> str:
    return html.escape(f"{x:.2f}" if isinstance(x, float) else str(x))


def badge(verdict: str) -> str:
    short = outcome(verdict)
    return f"<span class='badge' style='background:{BADGE[short]}'>{_e(short)}</span>"


def table_html(rows: list[dict], cls: str = "") -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(row.get(c, ''))}</td>" for c in cols) + "</tr>" for row in rows)
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def first_screen_html(r: Report) -> str:
    rows = "".join(f"<tr><td>{badge(f['verdict'])}</td><td class='which'><a href='#finding-{f['finding']}'>"
                   f"{_e(finding_label(f))}</a></td><td>{_e(f['claim'])}</td>"
                   f"<td class='num'>{_e(f['decided_by'])}</td></tr>"
                   for f in r.findings)
    untestable = "".join(f"<li>{_e(u)}</li>" for u in _untestable(r.findings))
    return (f"<p class='meta'>{_e(' '.join(r.meta))}</p><table class='verdicts'><thead><tr><th>verdict</th>"
            f"<th>finding</th><th>claim</th><th>decided by</th></tr></thead><tbody>{rows}</tbody></table>"
            + (f"<ul class='untestable'>{untestable}</ul>" if untestable else ""))


def cards_html(r: Report) -> str:
    out = []
    for n, group in _by_number(r.findings).items():
        parts = [f"<section class='card' id='finding-{n}'><h3>Finding {n}: {_e(group[0]['claim'])}</h3>"
                 f"<p class='paper'>{_e(group[0].get('source', 'He et al.'))}: {_e(group[0]['paper'])}.</p>"]
        for f in group:
            parts.append(f"<h4>{badge(f['verdict'])} {_e(f.get('model', ''))} <small>({_e(f.get('scope', ''))})"
                         f"</small></h4>" + (f"<p>{_e(reason(f['verdict']))}</p>" if reason(f["verdict"]) else ""))
            if f.get("votes"):
                parts.append(table_html([{"vote": v["vote"], "outcome": v["outcome"], "number": v["number"]}
                                         for v in f["votes"]], "votes"))
            if f.get("checks"):
                parts.append(table_html(_evidence_rows(f), "evidence"))
            details = "".join(f"<li>{_e(p)}</li>" for p in f.get("details") or [f["measured"]] if p)
            if details:
                parts.append(f"<details><summary>Everything measured</summary><ul>{details}</ul></details>")
        parts.append(f"<details><summary>Decision rule</summary><p>{_e(group[0]['rule'])}.</p></details></section>")
        out.append("".join(parts))
    return "".join(out)


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:1.2em auto;padding:0 12px;color:#222;font-size:14px}"
         "h1{font-size:22px;margin:0 0 .3em}table{border-collapse:collapse;margin:.6em 0;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top}th{background:#f3f3f3;text-align:left}"
         ".scroll{overflow-x:auto;max-width:100%}.verdicts{width:100%}.verdicts td{padding:4px 7px}"
         ".verdicts .which{white-space:nowrap}.num{font-size:12px;color:#333}"
         ".badge{display:inline-block;color:#fff;border-radius:10px;padding:1px 9px;font-size:12px;white-space:nowrap}"
         ".meta{color:#444;margin:.2em 0 .4em}.untestable{font-size:12px;color:#555;margin:.2em 0}"
         ".card{border:1px solid #d0d7de;border-radius:6px;padding:4px 14px;"
         "margin:1em 0}.paper{color:#555;font-size:13px}details{margin:.4em 0}summary{cursor:pointer;color:#0969da}"
         "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}pre{overflow-x:auto}")


def page(r: Report, figures_dir: Path) -> str:
    images = []
    for file, title, caption in r.figures:
        data = base64.b64encode((figures_dir / Path(file).name).read_bytes()).decode()
        images.append(f"<figure><h3>{_e(title)}</h3><img alt='{_e(title)}: {_e(caption)}' "
                      f"src='data:image/png;base64,{data}'><figcaption>{_e(caption)}</figcaption></figure>")
    sections = "".join(f"<h2>{_e(title)}</h2>{table_html(rows)}" + (f"<p>{_e(note)}</p>" if note and rows else "")
                       for title, rows, note in r.sections)
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    name = _e(r.name)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>grokscope report: {name}</title>"
            f"<style>{STYLE}</style></head><body><h1>grokscope study report: {name}</h1>{first_screen_html(r)}"
            f"<h2>Findings</h2>{cards_html(r)}<h2>Runs</h2>{table_html(r.runs)}"
            + (f"<details><summary>Milestones per run</summary><ul>{notes}</ul></details>" if notes else "")
            + f"<h2>Fine-tunes (He et al.'s categories)</h2>{table_html(r.finetunes)}"
            f"<h2>Figures</h2>{''.join(images)}{sections}<h2>Provenance</h2>"
            f"<pre>{_e(json.dumps(r.provenance, indent=2, default=str))}</pre></body></html>")

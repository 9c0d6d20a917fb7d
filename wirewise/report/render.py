"""The list of blocks rendered twice: Markdown, and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from wirewise.report.blocks import Block, Bullets, Fig, Heading, Para, Table


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Para):
            lines += [f"*{block.text}*" if block.style == "note" else block.text, ""]
        elif isinstance(block, Bullets):
            for i, item in enumerate(block.items, 1):
                mark = f"{i}." if block.ordered else "-"
                if isinstance(item, tuple):
                    lines.append(f"{mark} {item[0]}")
                    lines += [f"    - {sub}" for sub in item[1]]
                else:
                    lines.append(f"{mark} {item}")
            lines.append("")
        elif isinstance(block, Table):
            align = block.align or "l" + "r" * (len(block.header) - 1)
            if block.key_value:
                lines += ["| | |", "|---|---|"]
                lines += [f"| **{_md_cell(k)}** | {_md_cell(v)} |" for k, v in block.rows]
            else:
                lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
            if block.note:
                lines += [block.note, ""]
        elif isinstance(block, Fig):
            chart = block.chart
            path = chart.png.relative_to(out_dir).as_posix()
            svg = chart.svg.relative_to(out_dir).as_posix()
            lines += [
                f"**Figure {block.number}. {chart.title}**",
                "",
                f"![{chart.title}]({path})",
                "",
                f"Figure {block.number}: {chart.caption} (SVG: [{chart.svg.name}]({svg}))",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
:root { --ink: #1d2329; --muted: #5b6570; --rule: #d9dee3; --band: #f5f7f9; --accent: #0b5cad; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--ink); background: #fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; letter-spacing: -.01em; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.02rem; margin: 1.6rem 0 .5rem; }
p { margin: .4rem 0 .8rem; }
.lede { color: var(--muted); }
nav { margin: .8rem 0 0; font-size: .9rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1.1em; white-space: nowrap; }
ul, ol { padding-left: 1.3rem; margin: .4rem 0 1rem; }
li { margin: .25rem 0; }
#verdict + ul { background: var(--band); border-left: 4px solid var(--accent); padding: .7rem 1rem .7rem 2.1rem;
  border-radius: 3px; }
.wide { overflow-x: auto; margin: .4rem 0 .4rem; }
table { border-collapse: collapse; font-size: .82rem; font-variant-numeric: tabular-nums; }
th, td { padding: .28rem .45rem; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { background: var(--band); font-weight: 600; text-align: left; vertical-align: bottom;
  line-height: 1.25; }
td.r, th.r { text-align: right; }
td.r { white-space: nowrap; }
td.l { min-width: 5rem; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tbody tr.invalid td { color: #8a8f95; background: repeating-linear-gradient(135deg, #fff, #fff 6px, #f6f6f6 6px, #f6f6f6 12px); }
table.kv th { width: 11rem; background: none; vertical-align: top; }
table.kv td { word-break: break-word; }
.note { color: var(--muted); font-size: .82rem; max-width: 62rem; }
figure { display: block; clear: both; width: 100%; margin: 1.2rem 0 2rem; break-inside: avoid;
  page-break-inside: avoid; }
figure img { display: block; width: 100%; max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .45rem; max-width: 62rem; }
figcaption b { color: var(--ink); }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85em; }
@media print {
  html { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table { font-size: 7.5pt; }
  .wide { overflow: visible; }
  tr, figure { break-inside: avoid; page-break-inside: avoid; }
}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
    ]
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    before_sections = True
    for block in blocks:
        if isinstance(block, Heading):
            if block.level == 2 and before_sections:
                before_sections = False
                links = "".join(f'<a href="#{esc(h.anchor)}">{esc(h.text)}</a>' for h in sections)
                out.append(f"<nav>{links}</nav>")
            anchor = f' id="{esc(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{block.level}{anchor}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            css = "lede" if before_sections else "note" if block.style == "note" else ""
            out.append(
                f'<p class="{css}">{esc(block.text)}</p>' if css else f"<p>{esc(block.text)}</p>"
            )
        elif isinstance(block, Bullets):
            tag = "ol" if block.ordered else "ul"
            out.append(f"<{tag}>")
            for item in block.items:
                if isinstance(item, tuple):
                    subs = "".join(f"<li>{esc(s)}</li>" for s in item[1])
                    out.append(f"<li>{esc(item[0])}<ul>{subs}</ul></li>")
                else:
                    out.append(f"<li>{esc(item)}</li>")
            out.append(f"</{tag}>")
        elif isinstance(block, Table):
            out.append(render_html_table(block))
        elif isinstance(block, Fig):
            chart = block.chart
            out.append(
                f'<figure id="{esc(chart.name)}">'
                f'<img src="{data_url(chart.png)}" alt="{esc(chart.title)}">'
                f"<figcaption><b>Figure {block.number}. {esc(chart.title)}.</b> {esc(chart.caption)}</figcaption>"
                "</figure>"
            )
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_html_table(table: Table) -> str:
    align = table.align or "l" + "r" * (len(table.header) - 1)
    parts = ['<div class="wide">']
    if table.key_value:
        parts.append('<table class="kv"><tbody>')
        for key, value in table.rows:
            cell = f"<code>{esc(value)}</code>" if key == "command" else esc(value)
            parts.append(f"<tr><th>{esc(key)}</th><td>{cell}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<table><thead><tr>")
        parts += [
            f'<th class="{a}">{esc(h)}</th>' for h, a in zip(table.header, align, strict=True)
        ]
        parts.append("</tr></thead><tbody>")
        for i, row in enumerate(table.rows):
            css = ' class="invalid"' if i in table.invalid_rows else ""
            parts.append(
                f"<tr{css}>"
                + "".join(f'<td class="{a}">{esc(c)}</td>' for c, a in zip(row, align, strict=True))
                + "</tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</div>")
    if table.note:
        parts.append(f'<p class="note">{esc(table.note)}</p>')
    return "".join(parts)

"""The report as a document: sections of text, tables and images.

Written as one self-contained HTML page (images inlined), a Markdown file and PNG files.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os


@dataclasses.dataclass
class Image:
    """A PNG figure: file name, bytes and a caption."""

    filename: str
    png: bytes
    caption: str


@dataclasses.dataclass
class Table:
    """A table: header cells and rows of cells (already formatted as text)."""

    header: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class Section:
    """A titled section: paragraphs (str), tables and images, in order."""

    title: str
    blocks: list = dataclasses.field(default_factory=list)


def markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown, images referenced by file name."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Image):
                lines += [f"![{block.caption}]({block.filename})", "", f"*{block.caption}*", ""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [block, ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #ccc; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; } nav a { margin-right: 1em; }
"""


def page_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page with every image inlined (opens from disk, no server)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", "<nav>"]
    parts += [f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections)]
    parts.append("</nav>")
    for i, section in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Image):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(block.caption)}" '
                             f'src="data:image/png;base64,{data}">'
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, Table):
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                                     for h in block.header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                          for row in block.rows]
                parts.append("</table>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(output_dir: str, title: str, sections: list[Section]) -> dict[str, str]:
    """Writes `index.html`, `report.md` and every image's PNG file into output_dir.

    Returns:
        `{"html": path, "markdown": path}`.
    """
    os.makedirs(output_dir, exist_ok=True)
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Image):
                with open(os.path.join(output_dir, block.filename), "wb") as f:
                    f.write(block.png)
    paths = {"html": os.path.join(output_dir, "index.html"),
             "markdown": os.path.join(output_dir, "report.md")}
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(page_html(title, sections))
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(markdown(title, sections))
    return paths

"""The report as a site: an index page per report, and a table of contents in each rendered notebook.

    python -m utils.site             # write report/index.html and report/<variant>/index.html for every built report
    python -m utils.site --render    # first re-render every executed notebook's HTML (utils.report.render_html)

`utils.report` writes the indexes at the end of a successful build, and `add_toc` puts a table of contents (the
notebook's headings, with a link back to the index) into every notebook it renders (nbconvert's templates have
none). An index holds a table of contents; the findings, the block `utils.findings` writes into the README, made
here from the same results JSON (`findings.block`; the README's block where the results cannot make one) and
rendered from Markdown with mistune, nbconvert's own renderer, which like GitHub reads the tables inside the
block's <details>; each rendered notebook with its sections, run status and wall time (`run_log.json`); each
figure the report wrote (figures/ or figures/<variant>/, grouped by notebook); and links to the other reports (the
other task). Every link is relative, so the site reads from a clone or a copy.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
from pathlib import Path

import mistune  # nbconvert's Markdown renderer (a dependency of nbconvert): tables inside <details> as GitHub
from traitlets.config import Config

from utils import findings
from utils.config import ROOT

HIDE_TAGS = dict(remove_cell_tags={"remove-cell"}, remove_input_tags={"remove-input"},
                 remove_all_outputs_tags={"remove-output"})


def for_reading(nb):
    """The executed notebook `nb` as the HTML shows it: the parameters once.

    papermill keeps the notebook's own `parameters` cell (the defaults, e.g. `profile = "cpu"`) and inserts after
    it a cell tagged `injected-parameters` with the values the run used, so the executed copy shows the parameters
    twice, the first time with values that did not run. Where papermill injected its cell, the default cell is
    tagged `remove-cell` here, so the HTML shows only the parameters the notebook ran with. The executed .ipynb is
    left as papermill wrote it (both cells): it is the record of the run, and its defaults say what a reader who
    opens the notebook without papermill gets."""
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, t in zip(nb.cells, tags):
            if "parameters" in t and "remove-cell" not in t:
                cell.metadata["tags"] = [*cell.metadata.get("tags", []), "remove-cell"]
    return nb


def render_html(nb_path: Path) -> Path:
    """`nb_path` rendered beside it as .html, for reading (`for_reading`; cells tagged as in `HIDE_TAGS` left
    out)."""
    import nbformat
    from nbconvert import HTMLExporter

    config = Config({"TagRemovePreprocessor": dict(enabled=True, **HIDE_TAGS)})
    nb = for_reading(nbformat.read(str(nb_path), as_version=4))
    body, _ = HTMLExporter(config=config).from_notebook_node(nb)
    body = add_toc(body)  # a table of contents of its headings, and a link to the report's index
    out = nb_path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out

NOTEBOOK_GLOB = "[0-9][0-9]_*.html"
TOC_ID = "report-toc"
_HEADING = re.compile(r'<h([1-3]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
_ANCHOR = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.S)
_TAG = re.compile(r"<[^>]+>")
_OLD_TOC = re.compile(rf'\n?<nav id="{TOC_ID}".*?</nav>\n?', re.S)


def headings(page: str) -> list[tuple[int, str, str]]:
    """(level, id, text) of the h1 to h3 headings with an id in a rendered page (nbconvert gives every Markdown
    heading one), in order."""
    out = []
    for level, hid, inner in _HEADING.findall(page):
        text = html.unescape(_TAG.sub("", _ANCHOR.sub("", inner))).strip()
        if text:
            out.append((int(level), html.unescape(hid), text))
    return out


def add_toc(page: str, index_href: str = "index.html") -> str:
    """`page` (a notebook rendered by nbconvert) with a table of contents of its h2/h3 headings and a link to the
    report's index at the top of its <main>; a table of contents added before is replaced."""
    page = _OLD_TOC.sub("", page)
    items = [f'<li class="toc-h{lvl}"><a href="#{html.escape(hid, quote=True)}">{html.escape(text)}</a></li>'
             for lvl, hid, text in headings(page) if lvl > 1]
    nav = (f'<nav id="{TOC_ID}" style="border:1px solid #ccc;border-radius:4px;padding:.4em 1em;margin:1em 0;'
           'font-family:var(--jp-content-font-family,sans-serif);font-size:90%;max-width:100%;box-sizing:border-box;'
           'overflow-wrap:anywhere">'
           f'<a href="{html.escape(index_href, quote=True)}">&larr; index of this report</a>'
           + (f'<strong style="margin-left:1em">Contents</strong><ul style="margin:.3em 0;columns:2 22em">'
              + "".join(items) + "</ul>" if items else "")
           + "<style>#report-toc li.toc-h3{margin-left:1.5em;list-style:circle}</style></nav>\n")
    if "<main>" in page:
        return page.replace("<main>", "<main>\n" + nav, 1)
    m = re.search(r"<body[^>]*>", page)
    return page[:m.end()] + "\n" + nav + page[m.end():] if m else nav + page


def reports(root: Path = ROOT, pattern: str = NOTEBOOK_GLOB) -> list[str]:
    """The variants of the built reports under `root`/report ('' for the main, body-part report; 'abnormality',
    'abnormality-HAND+WRIST', ...): the folders that hold at least one rendered notebook (or file like `pattern`)."""
    base = Path(root) / "report"
    found = [""] if any(base.glob(pattern)) else []
    if base.is_dir():
        found += sorted(d.name for d in base.iterdir() if d.is_dir() and any(d.glob(pattern)))
    return found


def title(variant: str) -> str:
    """A report's name for a reader, e.g. "Normal / abnormal (MURA's task), body parts HAND, WRIST"."""
    task, _, parts = variant.partition("-")
    name = {"": "Body part (7 classes)", "bodypart": "Body part (7 classes)",
            "abnormality": "Normal / abnormal (MURA's task)"}.get(task, task)
    return name + (f", body parts {parts.replace('+', ', ')}" if parts else "")


def findings_markdown(root: Path = ROOT) -> str:
    """The findings block as Markdown: written from the results under `root` (`utils.findings.block`), else the
    README's block between its markers, else ''."""
    try:
        text = findings.block(Path(root))
    except Exception:  # results of a partial run (--only, an older layout) that the block cannot be written from
        readme = ROOT / "README.md"
        text = readme.read_text() if readme.is_file() else ""
        if findings.START not in text or findings.END not in text:
            return ""
        text = text.split(findings.START, 1)[1].split(findings.END, 1)[0]
    return text.replace(findings.START, "").replace(findings.END, "").strip()


def markdown_html(text: str) -> str:
    return mistune.create_markdown(escape=False, plugins=["table", "strikethrough"])(text)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.45;margin:0 auto;
     max-width:72rem;padding:1rem 1.5rem;color:#222;overflow-wrap:anywhere}
h1{font-size:1.7rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav.toc,nav.reports{background:#f6f8fa;border:1px solid #ddd;border-radius:4px;padding:.5em 1em}
nav.toc li.sub{font-size:90%}
table{border-collapse:collapse;margin:.6em 0;font-size:90%;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
code{font-size:90%} summary{cursor:pointer}
.notebook{margin:1.2em 0}
.notebook h3{margin-bottom:.2em} .meta{color:#555;font-size:90%}
.failed{color:#b00;font-weight:bold}
.figures{display:flex;flex-wrap:wrap;gap:.8em;margin:.5em 0}
.figures figure{margin:0;width:15rem} .figures img{width:100%;height:auto;border:1px solid #ddd}
.figures figcaption{font-size:85%}
"""


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def index_page(root: Path, variant: str, variants: list[str]) -> str:
    """The index of the report `variant` under `root` (HTML)."""
    root = Path(root)
    folder = root / "report" / variant if variant else root / "report"
    figdir = root / "figures" / variant if variant else root / "figures"
    pages = sorted(folder.glob(NOTEBOOK_GLOB))
    figures = sorted(figdir.glob("*.png")) if figdir.is_dir() else []
    log_file = folder / "run_log.json"
    log = json.loads(log_file.read_text()) if log_file.is_file() else {}
    runs = {Path(e["notebook"]).stem: e for e in log.get("notebooks", [])}
    esc = html.escape

    notebooks, toc_items = [], []
    for page in pages:
        heads = headings(page.read_text(encoding="utf-8"))
        name = next((t for lvl, _, t in heads if lvl == 1), page.stem)
        anchor = f"nb-{page.stem}"
        run = runs.get(page.stem, {})
        status = run.get("status")
        meta = ([f'<span class="failed">{esc(status)}: {esc(run.get("error", ""))}</span>'] if status and status != "ok"
                else [])
        if "wall_s" in run:
            meta.append(f"{run['wall_s']:.0f} s to run")
        meta.append(f'<a href="{esc(page.name)}">{esc(page.name)}</a>')
        if page.with_suffix(".ipynb").is_file():
            meta.append(f'<a href="{esc(page.with_suffix(".ipynb").name)}">executed notebook (.ipynb)</a>')
        sections = "".join(f'<li{" class=sub" if lvl == 3 else ""}><a href="{esc(page.name)}#{esc(hid, quote=True)}">'
                           f"{esc(t)}</a></li>" for lvl, hid, t in heads if lvl > 1)
        figs = [f for f in figures if f.name[:2] == page.name[:2]]
        gallery = "".join(
            f'<figure><a href="{esc(_rel(f, folder))}"><img src="{esc(_rel(f, folder))}" alt="{esc(f.stem)}"></a>'
            f"<figcaption>{esc(f.name)}</figcaption></figure>" for f in figs)
        notebooks.append(
            f'<section class="notebook" id="{anchor}"><h3><a href="{esc(page.name)}">{esc(name)}</a></h3>'
            f'<div class="meta">{" · ".join(meta)}</div>'
            + (f"<ul>{sections}</ul>" if sections else "")
            + (f'<div class="figures">{gallery}</div>' if gallery else "") + "</section>")
        toc_items.append(f'<li class="sub"><a href="#{anchor}">{esc(name)}</a></li>')
    stray = [f for f in figures if not any(f.name[:2] == p.name[:2] for p in pages)]
    if stray:
        notebooks.append('<section class="notebook" id="nb-other"><h3>Other figures</h3><div class="figures">'
                         + "".join(f'<figure><a href="{esc(_rel(f, folder))}"><img src="{esc(_rel(f, folder))}" '
                                   f'alt="{esc(f.stem)}"></a><figcaption>{esc(f.name)}</figcaption></figure>'
                                   for f in stray) + "</div></section>")

    others = [(_rel(root / "report" / v / "index.html" if v else root / "report" / "index.html", folder), v)
              for v in variants if v != variant]
    other_links = [f'<a href="{esc(href)}">{esc(title(v))}</a>' for href, v in others]
    readme = root / "README.md"
    findings = markdown_html(findings_markdown(root))
    run_line = ", ".join(f"{k.replace('_', ' ')} {esc(str(log[k]))}" for k in
                         ("profile", "task", "parts", "data_source", "git_commit", "device", "started") if k in log)
    if "total_s" in log:
        run_line += f", {log['total_s']:.0f} s in all"

    toc = ['<li><a href="#findings">Findings</a></li>',
           f'<li><a href="#notebooks">Notebooks and figures</a><ul>{"".join(toc_items)}</ul></li>']
    if others:
        toc.append('<li><a href="#other-reports">The other reports</a></li>')
    body = [f"<h1>Report: {esc(title(variant))}</h1>",
            (f'<nav class="reports">Other reports: {" · ".join(other_links)}</nav>' if others else ""),
            f'<p class="meta">Run: {run_line}.</p>' if run_line else "",
            f'<nav class="toc"><strong>Contents</strong><ul>{"".join(toc)}</ul></nav>',
            '<h2 id="findings">Findings</h2>',
            '<p class="meta">Both tasks\' key numbers, written by <code>python -m utils.findings</code> from '
            "<code>report/**/results/*.json</code>; the same block stands in "
            + (f'<a href="{esc(_rel(readme, folder))}">README.md</a>' if readme.is_file() else "README.md")
            + ", beside the research questions and how the intervals are made.</p>",
            findings or "<p>No findings: the results this block is written from are missing.</p>",
            '<h2 id="notebooks">Notebooks and figures</h2>',
            "".join(notebooks) or "<p>No rendered notebooks.</p>"]
    if others:
        body += ['<h2 id="other-reports">The other reports</h2>',
                 "<ul>" + "".join(f"<li>{a} (<code>report/{esc(v + '/' if v else '')}</code>)</li>"
                                  for a, (_, v) in zip(other_links, others)) + "</ul>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Report: {esc(title(variant))}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_indexes(root: Path | str = ROOT) -> list[Path]:
    """Write index.html into every built report under `root`/report; returns the pages written."""
    root = Path(root or ROOT)
    variants = reports(root)
    out = []
    for v in variants:
        page = (root / "report" / v if v else root / "report") / "index.html"
        page.write_text(index_page(root, v, variants), encoding="utf-8")
        out.append(page)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.site", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-root", default="", help="the folder that holds report/ and figures/ (default: the "
                                                   "repository)")
    ap.add_argument("--render", action="store_true", help="re-render each report's executed notebooks to HTML "
                                                          "first (no notebook is run)")
    a = ap.parse_args(argv)
    root = Path(a.out_root).resolve() if a.out_root else ROOT
    if a.render:

        for v in reports(root, "[0-9][0-9]_*.ipynb"):
            folder = root / "report" / v if v else root / "report"
            for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
                print(f"[site] rendered {_rel(render_html(nb), root)}")
    for page in write_indexes(root):
        print(f"[site] wrote {_rel(page, root)}")


if __name__ == "__main__":
    main()

"""The report's pages as a reader's browser shows them, and the site's index pages.

Every rendered page (report/*.html, report/<variant>/*.html, the index pages) is opened in headless Chromium at a
1280 px wide window, driven by Selenium through the system's chromedriver (`make setup` installs Chromium and
chromedriver from the distribution's packages where they are missing; Selenium is pinned in requirements.txt).
A page fails, with every defect it shows listed at once, on:

- a horizontal overflow: the page scrolls sideways (document wider than the window), or a table, a preformatted
  output or an image is wider than the page or than its box (a table that scrolls inside the page, or is cut off);
- an image that does not load (naturalWidth 0);
- a traceback or warning block: a stderr output area (how nbconvert renders warnings and errors), an output that
  prints a Python warning (`file.py:123: SomeWarning:`), or the text 'Traceback (most recent call last)';
- a table cell that shows `nan` (alone or as a number, as in "nan [nan, nan]"), or `PosixPath(` anywhere.

One test per page, so that one run lists every page's defects.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from utils import site
from utils.config import ROOT

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
WIDTH, SLACK = 1280, 4  # window width (px), and how far past it a box may reach before it counts as overflow


def rendered_pages(root: Path = ROOT) -> list[Path]:
    """The rendered notebooks of every built report, and the index pages they should have."""
    pages = []
    for v in site.reports(root):
        folder = root / "report" / v if v else root / "report"
        pages += sorted(folder.glob(site.NOTEBOOK_GLOB)) + [folder / "index.html"]
    return pages


PAGES = rendered_pages()

# Runs in the page once it has loaded (and every image has decoded or failed); returns one line per defect.
CHECK_PAGE = r"""
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
Promise.all(imgs.map(i => i.decode().catch(() => null))).then(() => {
  const problems = [];
  const STDERR = '[data-mime-type="application/vnd.jupyter.stderr"], .output_stderr';
  const short = (s, n = 90) => (s || '').replace(/\s+/g, ' ').trim().slice(0, n);
  const doc = document.documentElement;
  const page = doc.clientWidth, slack = arguments[0];
  const shown = el => el.getClientRects().length > 0 || el.closest('details:not([open])') !== null;
  if (doc.scrollWidth > window.innerWidth + slack)
    problems.push(`page scrolls sideways: ${doc.scrollWidth} px wide in a ${window.innerWidth} px window`);
  for (const el of document.querySelectorAll('table, pre, img')) {
    // code cells are not the report; a stderr block is reported below
    if (!shown(el) || el.closest(`.jp-InputArea, .jp-Cell-inputWrapper, ${STDERR}`)) continue;
    const r = el.getBoundingClientRect();
    let box = el.parentElement;
    while (box && box !== document.body &&
           !['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(box).overflowX))
      box = box.parentElement;
    const clipped = box && box !== document.body && box.scrollWidth > box.clientWidth + slack;
    if (r.right > page + slack || clipped)
      problems.push(`${el.tagName.toLowerCase()} wider than the page (` +
                    (clipped ? `needs ${box.scrollWidth} px in a ${box.clientWidth} px box: scrolls sideways or is cut`
                             : `${Math.round(r.width)} px, reaches ${Math.round(r.right)} px of ${page}`) +
                    `): "${short(el.innerText || el.alt || el.src, 70)}"`);
  }
  for (const img of imgs)
    if (img.naturalWidth === 0) problems.push(`image does not load: ${short(img.getAttribute('src'), 80)}`);
  for (const el of document.querySelectorAll(`${STDERR}, .jp-OutputArea-output pre, .output_area pre`))
    if (shown(el) && (el.matches(STDERR) || (!el.closest(STDERR) && /\.py:\d+: \w*Warning\b/.test(el.textContent))))
      problems.push(`warning/stderr block: "${short(el.textContent)}"`);
  const text = document.body.innerText;
  if (text.includes('Traceback (most recent call last)')) problems.push('a traceback is shown');
  for (const cell of document.querySelectorAll('td, th'))
    if (/(^|[\s\[(,;])nan($|[\s\]),;%])/i.test(cell.innerText.trim())) {
      const row = cell.closest('tr'), table = cell.closest('table');
      const heads = table && table.tHead ? table.tHead.rows : [];
      const col = Array.from(heads).map(h => h.cells[cell.cellIndex]).find(c => c && c.innerText.trim());
      problems.push(`nan in a table cell: "${short(cell.innerText, 40)}" ` +
                    `(column "${short(col && col.innerText, 30)}", ` +
                    `row "${short(row && row.cells[0].innerText, 40)}")`);
    }
  let at = text.indexOf('PosixPath(');
  while (at >= 0) {
    problems.push(`object repr shown: "${short(text.slice(at, at + 90))}"`);
    at = text.indexOf('PosixPath(', at + 1);
  }
  done(problems);
});
"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("Chromium and chromedriver are needed for the browser test: `make setup` installs them "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},900", "--hide-scrollbars", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def page_problems(driver, page: Path) -> list[str]:
    driver.get(page.resolve().as_uri())
    return driver.execute_async_script(CHECK_PAGE, SLACK)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT / "report").as_posix() for p in PAGES])
def test_page_reads_cleanly_in_a_browser(browser, page):
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing: `python -m utils.site` writes the index pages"
    problems = page_problems(browser, page)
    assert not problems, f"{page.relative_to(ROOT)}: {len(problems)} defect(s)\n  " + "\n  ".join(problems)


def test_the_checks_catch_each_defect(browser, tmp_path):
    """The page check itself: a page with every defect is caught on each, a clean page passes."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<html><body><main>"
        '<div data-mime-type="application/vnd.jupyter.stderr"><pre>/x/utils/a.py:3: UserWarning: hm</pre></div>'
        '<div class="jp-OutputArea-output"><pre>Traceback (most recent call last):\n  boom</pre></div>'
        "<table><tr><td>nan</td><td>0.1 [nan, nan]</td><td>nanometre</td></tr></table>"
        "<p>PosixPath('/tmp/x')</p>"
        '<img src="missing.png" alt="gone">'
        '<div style="overflow-x:auto;width:300px"><table><tr><td style="min-width:900px">wide</td></tr></table></div>'
        '<div style="width:3000px">sideways</div>'
        "</main></body></html>")
    problems = page_problems(browser, bad)
    text = "\n".join(problems)
    assert "page scrolls sideways" in text
    assert "table wider than the page" in text and "scrolls sideways or is cut" in text
    assert "image does not load: missing.png" in text
    assert "warning/stderr block" in text and "a traceback is shown" in text
    assert sum("nan in a table cell" in p for p in problems) == 2 and "nanometre" not in text
    assert "object repr shown" in text
    good = tmp_path / "good.html"
    Image.new("L", (4, 4)).save(tmp_path / "dot.png")
    good.write_text('<html><body><table><tr><td>0.12</td><td>financial</td></tr></table><img src="dot.png" alt="dot">'
                    "</body></html>")
    assert page_problems(browser, good) == []


def test_site_index_links_notebooks_figures_and_the_other_task(tmp_path):
    """A built tree with two reports: each index links its notebooks (with their sections), its figures and the
    other report; the table of contents in a rendered notebook lists its headings and links back."""
    nb_page = ('<html><body><main><h1 id="01-·-Title">01 · Title<a class="anchor-link" href="#x">¶</a></h1>'
               '<h2 id="Part-A">Part A<a class="anchor-link" href="#Part-A">¶</a></h2>'
               '<h3 id="Sub-&amp;-b">Sub &amp; b</h3></main></body></html>')
    for v in ("", "abnormality"):
        (tmp_path / "report" / v).mkdir(parents=True, exist_ok=True)
        (tmp_path / "figures" / v).mkdir(parents=True, exist_ok=True)
        (tmp_path / "report" / v / "01_train.html").write_text(site.add_toc(nb_page))
        (tmp_path / "figures" / v / "01_curves.png").write_bytes(b"")
    (tmp_path / "report" / "empty-variant").mkdir()
    pages = site.write_indexes(tmp_path)
    assert pages == [tmp_path / "report" / "index.html", tmp_path / "report" / "abnormality" / "index.html"]
    main, ab = (p.read_text() for p in pages)
    assert 'href="01_train.html#Part-A"' in main and "01 · Title" in main and "Sub &amp; b" in main
    assert 'src="../figures/01_curves.png"' in main and 'src="../../figures/abnormality/01_curves.png"' in ab
    assert 'href="abnormality/index.html"' in main and 'href="../index.html"' in ab
    assert 'id="findings"' in main and "empty-variant" not in main
    rendered = (tmp_path / "report" / "01_train.html").read_text()
    assert rendered.count(f'id="{site.TOC_ID}"') == 1 and 'href="index.html"' in rendered
    assert site.add_toc(rendered) == rendered  # adding it again replaces it


def test_committed_indexes_are_current():
    """report/**/index.html are what `python -m utils.site` writes from the report as it stands."""
    variants = site.reports(ROOT)
    for v in variants:
        page = (ROOT / "report" / v if v else ROOT / "report") / "index.html"
        assert page.is_file() and page.read_text(encoding="utf-8") == site.index_page(ROOT, v, variants), \
            f"{page.relative_to(ROOT)} is out of date: run `python -m utils.site`"

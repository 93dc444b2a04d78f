"""The course as a website (``make site``, :mod:`helpers.site`) is complete and works offline.

The site is built once, from the committed notebooks, into a temporary folder and served on a
loopback port by a thread of this process. Headless Chromium (Playwright, with the launch flags of
``browser_panels``; Playwright gives each launch a new, empty profile) opens every page and the
check fails on a link into the site whose page or anchor does not exist, an image that did not
load, maths left as LaTeX or missing from a page whose source has formulas, a request to anything
but the loopback server (each one is blocked and reported), a failed request and a JavaScript
error. A deliberately broken page shows that the check reports each of these. Without Chromium or
Playwright the browser tests skip with one line; the other tests still run.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
import urllib.parse
from pathlib import Path

import nbformat
import pytest

from browser_panels import CHROMIUM_FLAGS, find_chromium
from helpers import site

pytestmark = pytest.mark.xdist_group("site")  # one worker builds the site once for all of them

CHROMIUM = find_chromium()
RAW_MATHS = re.compile(r"\$\$|\\\(|\\\[|\\[A-Za-z]{2,}|\$[^$\n]*[\\^_][^$\n]*\$")  # LaTeX a reader should never see
PAGE_TEXT = """() => {  // the text a reader sees as prose: not code, not rendered maths
    const skip = 'pre, code, script, style, math, textarea, .highlight';
    const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
        n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    const parts = [];
    while (walk.nextNode()) parts.push(walk.currentNode.nodeValue);
    return {text: parts.join(' '), maths: document.querySelectorAll('math').length,
            links: [...document.querySelectorAll('a[href]')].map(a => a.href),
            images: [...document.querySelectorAll('img')].map(i => [i.getAttribute('src'),
                                                                    i.complete && i.naturalWidth > 0])};
}"""


def browser_missing() -> str | None:
    """Why the browser check of the site cannot run here, or None."""
    if CHROMIUM is None:
        return "no Chromium installed (Debian: apt-get install chromium); the browser check of the site is skipped"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright); the browser check of the site is skipped"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The site, built once for this module (its source tree is beside it, ``site-source``)."""
    return site.build(tmp_path_factory.mktemp("built") / "site")


@contextlib.contextmanager
def serve(folder: Path):
    """``folder`` over HTTP on a free loopback port, from a thread of this process; yields the base URL."""
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *args: None}), directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def html_pages(folder: Path) -> list[str]:
    """The site's pages, relative to ``folder`` (the theme's templates in ``_static`` are not pages)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html") if "_static" not in p.parts)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """The ids (and names) an ``#anchor`` can point at in the HTML file ``path``."""
    return frozenset(re.findall(r'\s(?:id|name)="([^"]+)"', path.read_text(encoding="utf-8")))


def broken_link(url: str, base: str, folder: Path) -> str | None:
    """Why ``url`` (absolute) does not resolve inside the site served from ``folder`` at ``base``, or None."""
    parts = urllib.parse.urlsplit(url)
    if not url.startswith(base):
        return None  # a link out of the site: followed by a reader, never loaded here
    target = folder / urllib.parse.unquote(parts.path[len(urllib.parse.urlsplit(base).path):])
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return "no such file"
    if parts.fragment and target.suffix == ".html" and urllib.parse.unquote(parts.fragment) not in anchors(target):
        return f"no anchor #{parts.fragment} in {target.relative_to(folder).as_posix()}"
    return None


def check_site(folder: Path, pages: list[str], maths_pages: set[str]) -> list[str]:
    """Open each of ``pages`` (relative to ``folder``) in headless Chromium; the problems, one line each.

    ``maths_pages``: the pages whose source has formulas, so that must show rendered maths.
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with serve(folder) as base, sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = chromium.new_page()
            seen: list[str] = []  # this page's problems found by the listeners while it loads

            def route(route):
                url = route.request.url
                if url.startswith(base) or url.startswith("data:"):
                    return route.continue_()
                seen.append(f"a request out of the site: {url}")
                return route.abort()

            page.route("**/*", route)
            page.on("console", lambda m: m.type == "error" and seen.append(f"JavaScript console error: {m.text}"))
            page.on("pageerror", lambda error: seen.append(f"JavaScript error: {error}"))
            page.on("response", lambda r: r.status >= 400 and seen.append(f"HTTP {r.status} for {r.url}"))
            for name in pages:
                seen.clear()
                page.goto(base + name, wait_until="load")
                shown = page.evaluate(PAGE_TEXT)
                found = list(seen)
                found += [f"broken link {url}: {why}" for url in dict.fromkeys(shown["links"])
                          if (why := broken_link(url, base, folder))]
                found += [f"image did not load: {src}" for src, loaded in shown["images"] if not loaded]
                raw = sorted(set(RAW_MATHS.findall(shown["text"])))
                if raw:
                    found.append(f"maths left as LaTeX: {raw[:5]}")
                if name in maths_pages and shown["maths"] == 0:
                    found.append("its source has formulas but the page shows no rendered maths")
                problems += [f"{name}: {line}" for line in found]
        finally:
            chromium.close()
    return problems


# ---------------------------------------------------------------- the site as built


def test_every_lesson_and_solution_is_a_page_in_teaching_order(built):
    """The landing page is the README; its sidebar lists notebooks/ and then solutions/ in name order."""
    index = (built / "index.html").read_text(encoding="utf-8")
    assert "<h1>Federated and Transfer Learning for Recommender Systems" in index
    sidebar = re.search(r'<nav class="bd-links bd-docs-nav".*?</nav>', index, re.DOTALL).group(0)
    expected = [f"{p.parent.name}/{p.stem}.html" for p in site.lessons() + site.solutions()]
    listed = [link for link in re.findall(r'href="([^"#]+)"', sidebar) if link in expected]
    assert len(site.lessons()) > 1 and listed == expected
    for page in expected + [p.removesuffix(".md") + ".html" for p in site.PAGES]:
        assert (built / page).is_file(), page
    assert 'href="solutions/index.html"' in index  # the README's link to the solutions folder


def test_control_panels_are_static_notes(built):
    """Each control panel of a lesson becomes one note; no widget state, widget script or CDN is left."""
    for path in site.lessons():
        panels = sum(site.WIDGET_VIEW in output.get("data", {}) for cell in nbformat.read(path, as_version=4).cells
                     for output in cell.get("outputs", []))
        text = (built / "notebooks" / f"{path.stem}.html").read_text(encoding="utf-8")
        assert text.count('class="admonition note control-panel"') == panels, path.name
        assert "widget-view+json" not in text and "widget-state+json" not in text, path.name
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), path.name


def test_maths_becomes_mathml_core():
    """Bold, blackboard and calligraphic letters become Unicode letters (MathML Core ignores mathvariant)."""
    markup = site.mathml(r"\mathbf p_u \cdot \mathbb R^n + \mathcal N(0, \sigma^2) + \frac{1}{2}", display=True)
    assert markup.startswith("<math") and 'display="block"' in markup and "<mfrac>" in markup
    assert "𝐩" in markup and "ℝ" in markup and "𝒩" in markup
    assert set(re.findall(r'mathvariant="([^"]+)"', markup)) <= {"normal"}
    spaced = site.mathml(r"\exp s_c - \exp(x) \pmod{2}", display=False)  # TeX's thin space; (mod 2) keeps its size
    assert spaced.count("<mspace") == 3 and '<mi>exp</mi><mspace width="0.1667em" />' in spaced
    assert '<mo stretchy="false">(</mo><mi>mod</mi>' in spaced
    assert site.has_maths("the update $\\theta \\leftarrow \\theta - \\eta g$")
    assert not site.has_maths("`$HOME` costs $5, not $6")


def test_readme_links_point_into_the_site():
    """The README becomes index.md and a link to the solutions/ folder its index page, from any page."""
    renamed = {"README.md": "index.md", "solutions": "solutions/index.md"}
    text = "[a](solutions/) [b](README.md#start) [c](notebooks/01.ipynb) [d](https://x.org/README.md)"
    assert site.relink(text, "README.zh-CN.md", renamed) == (
        "[a](solutions/index.md) [b](index.md#start) [c](notebooks/01.ipynb) [d](https://x.org/README.md)")
    assert site.relink("[home](../README.md)", "data/README.md", renamed) == "[home](../index.md)"


@needs_browser
def test_every_page_opens_cleanly_in_chromium(built):
    """Every page of the site: its links and anchors resolve, its figures load, its maths is rendered,
    nothing is requested from outside the site and no script fails."""
    source = built.with_name(built.name + "-source")
    pages = html_pages(built)
    maths_pages = site.pages_with_maths(source)
    assert {"notebooks/01_softmax_scoring.html", "notebooks/10_privacy_security.html"} <= maths_pages
    problems = check_site(built, pages, maths_pages)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the check can fail

BROKEN_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="http://example.invalid/tracker.js"></script></head><body>
<p><a href="missing.html">a page that does not exist</a> <a href="good.html#nowhere">an anchor that does not exist</a>
<a href="good.html#here">a working link</a> <a href="https://example.invalid/">a link out (fine)</a></p>
<img src="missing.png" alt="a missing figure">
<p>raw maths: $$x^2$$ and \\frac{1}{2}</p><pre>$$ in code is fine \\frac</pre>
<script>console.error("boom")</script></body></html>"""
GOOD_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<h1 id="here">Fine</h1><p>No maths here, though its source had some.</p></body></html>"""


@needs_browser
def test_the_check_catches_a_broken_page(tmp_path):
    """Each kind of fault on a broken page is reported; a working link and a link out are not; a page
    without the maths its source promised is reported for that alone."""
    (tmp_path / "broken.html").write_text(BROKEN_PAGE)
    (tmp_path / "good.html").write_text(GOOD_PAGE)
    problems = check_site(tmp_path, html_pages(tmp_path), maths_pages={"good.html"})
    text = "\n".join(problems)
    assert re.search(r"broken\.html: broken link \S+/missing\.html: no such file", text), text
    assert re.search(r"broken\.html: broken link \S+/good\.html#nowhere: no anchor #nowhere", text), text
    assert "good.html#here" not in text and "example.invalid/:" not in text, text  # working and outgoing links pass
    assert "broken.html: image did not load: missing.png" in text, text
    assert "broken.html: maths left as LaTeX: ['$$', '\\\\frac']" in text, text
    assert "broken.html: a request out of the site: http://example.invalid/tracker.js" in text, text
    assert "broken.html: JavaScript console error: boom" in text, text
    assert re.search(r"broken\.html: HTTP 404 for \S+/missing\.png", text), text
    assert "good.html: its source has formulas but the page shows no rendered maths" in text, text
    assert len([line for line in problems if line.startswith("good.html")]) == 1, text

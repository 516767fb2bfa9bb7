"""The documentation site builds with no warning and its diagrams render, offline, readably.

``mkdocs build --strict`` (a broken link or anchor fails it) builds the site into a temporary
folder; headless Chromium (Debian's ``chromium`` with ``chromium-driver``) opens every diagram
page from ``file://`` and checks what a reader sees: each diagram became an SVG with every state
name and every label line of its machine, no Mermaid error, no two edge labels overlapping, no
text under 10 px at the site's content width, and nothing loaded from the network. A
screenshot of each diagram goes to ``build/docs-screenshots/`` (ignored by git) for people.

These tests need the ``docs`` extra and Chromium (``.ci/run`` installs both); elsewhere they
skip, except under CI, where a missing piece fails them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psc.machines import machine_classes
from p2psc.statediagram import diagram, fold_lines, wrap

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "docs-screenshots"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
WIDTH, HEIGHT = 1280, 900  # a laptop screen; the theme shows the navigation beside the text
MIN_TEXT_PX = 10.0


def _need(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing (.ci/run installs it)")
        pytest.skip(f"{what} is missing (bash .ci/run, or P2PSC_EXTRAS=test,speed,docs)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need(importlib.util.find_spec("mkdocs") is not None, "the docs extra (mkdocs)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        # Not -q: mkdocs counts only the warnings it prints, so -q would let --strict pass.
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr}"
    return out


def test_the_site_has_every_part(site: Path) -> None:
    """Getting started at the top, the spec documents themselves, every diagram, the API."""
    assert "30-second example" in (site / "index.html").read_text()
    for name in ("protocol", "mediator", "negotiator", "properties", "legacy"):
        assert (site / "spec" / f"{name}.html").is_file()
    for name in machine_classes():
        assert (site / "spec" / "diagrams" / f"{name}.html").is_file()
    overview = (site / "spec" / "diagrams" / "index.html").read_text()
    assert all(f"{name}.html" in overview for name in machine_classes())
    assert "Unreleased" in (site / "guide" / "changelog.html").read_text()
    api = (site / "guide" / "api" / "connect.html").read_text()
    assert "doc-function" in api or "doc-class" in api  # rendered by mkdocstrings
    for asset in ("mermaid.min.js", "iframe-worker-shim.js"):
        assert (site / "assets" / asset).stat().st_size > 1000
    for page in site.rglob("*.html"):
        text = page.read_text()
        for cdn in ("unpkg.com", "cdn.jsdelivr.net", "fonts.googleapis.com"):
            assert cdn not in text, f"{page.relative_to(site)} loads from {cdn}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need(importlib.util.find_spec("selenium") is not None, "the docs extra (selenium)")
    _need(CHROMIUM is not None and CHROMEDRIVER is not None, "chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


_MEASURE = """
const out = {state: document.body.dataset.mermaid || null, diagrams: []};
for (const box of document.querySelectorAll("div.mermaid")) {
  const svg = box.querySelector("svg");
  if (!svg) { out.diagrams.push(null); continue; }
  const view = svg.viewBox.baseVal;
  const scale = svg.getBoundingClientRect().width / (view && view.width ? view.width : 1);
  const rect = (el) => { const r = el.getBoundingClientRect();
                         return [r.left, r.top, r.right, r.bottom]; };
  const labels = [];
  for (const label of svg.querySelectorAll("g.edgeLabel")) {
    const inner = label.querySelector("foreignObject div, text") || label;
    const text = (inner.innerText || inner.textContent || "").trim();
    if (text) labels.push({text: text, rect: rect(inner)});
  }
  let smallest = Infinity;
  for (const el of svg.querySelectorAll("foreignObject span, foreignObject p, text, tspan")) {
    if (!(el.textContent || "").trim()) continue;
    const px = parseFloat(getComputedStyle(el).fontSize) * scale;
    if (px < smallest) smallest = px;
  }
  out.diagrams.push({
    error: !!svg.querySelector("[aria-roledescription=error], .error-icon")
           || /Syntax error/.test(svg.textContent),
    nodes: Array.from(svg.querySelectorAll("g.node")).map((n) => n.textContent.trim()),
    text: svg.textContent,
    labels: labels,
    smallest: smallest,
    width: svg.getBoundingClientRect().width,
    column: box.getBoundingClientRect().width,
  });
}
out.resources = performance.getEntriesByType("resource").map((e) => e.name);
return out;
"""


def _overlap(a: list[float], b: list[float], slack: float = 1.0) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


@pytest.mark.parametrize("name", sorted(machine_classes()))
def test_diagram_renders_offline_complete_and_readable(site: Path, browser: Any, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = site / "spec" / "diagrams" / f"{name}.html"
    browser.get(page.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.body.dataset.mermaid || null")
    )
    seen = browser.execute_script(_MEASURE)
    assert seen["state"] == "done", "Mermaid reported an error (see the browser console)"
    assert len(seen["diagrams"]) == 1 and seen["diagrams"][0] is not None, "no SVG"
    shown = seen["diagrams"][0]
    # The whole diagram in one picture: a window as tall as the page (same width).
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, max(HEIGHT, int(height) + 100))
    try:
        browser.find_element(By.CSS_SELECTOR, "div.mermaid").screenshot(
            str(SCREENSHOTS / f"{name}.png")
        )
    finally:
        browser.set_window_size(WIDTH, HEIGHT)

    assert not shown["error"], "Mermaid drew an error"
    outside = [r for r in seen["resources"] if not r.startswith("file:")]
    assert outside == [], f"loaded from the network: {outside}"

    expected = diagram(machine_classes()[name])
    for state in expected.states:  # a node's text is its title, then any "↻ event" lines
        title = expected.titles[state]
        assert any(n == title or n.startswith(f"{title}↻") for n in shown["nodes"]), state
    text = " ".join(shown["text"].split())
    for edge in expected.edges:
        for line in edge.lines:
            for part in wrap(line):
                assert part in text, f"label {part!r} of {edge.source}->{edge.target} not drawn"
    for fold in expected.folds:
        for line in fold_lines(fold, expected.titles, expected.states):
            assert line in text, f"note line {line!r} not drawn"

    labels = shown["labels"]
    assert len(labels) == len(expected.edges)
    overlapping = [
        (a["text"], b["text"])
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
        if _overlap(a["rect"], b["rect"])
    ]
    assert overlapping == [], f"edge labels overlap: {overlapping}"
    assert shown["width"] <= shown["column"] + 1, "the diagram is wider than the column"
    assert shown["smallest"] >= MIN_TEXT_PX, (
        f"text shrinks to {shown['smallest']:.1f} px at the content width "
        f"({shown['column']:.0f} px)"
    )

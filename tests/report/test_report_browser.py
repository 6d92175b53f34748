"""The report in a real browser: images load, nothing from the store runs as code, the layout holds.

Needs selenium plus Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them);
skipped when they are absent. The layout tests run small versions of the quickstart and of the
bn_dissect CPU study, check the rendered page (no horizontal overflow of the page, every image
loaded, wide tables scrolling inside their box) and save full-page screenshots under the test's
``artifacts`` folder, and also under ``$ABLAB_SCREENSHOTS`` when it is set, to be compared by eye.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import yaml

from ablab.report import write_report
from fakestore import FakeStore

REPO = Path(__file__).resolve().parents[2]
WINDOW = (1280, 900)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
EVIL = '<script>alert(1)</script> <img src=x onerror="window.__pwned=1">'
OPTIONS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")




def make_store(path: Path) -> FakeStore:
    """Two variants (one with a malicious label) × 2 seeds; one diverged and one failed run."""
    rng = np.random.default_rng(1)
    statuses = {("baseline", 0): "done", ("baseline", 1): "diverged", (EVIL, 0): "done", (EVIL, 1): "failed"}
    runs, metrics = [], []
    for i, ((label, rep), status) in enumerate(statuses.items()):
        run = f"run{i}"
        error = f"Traceback (most recent call last):\nValueError: {EVIL}" if status == "failed" else None
        runs.append((run, label, rep, status, {"model.norm": label}, error, 1.0, "cpu", "0.1.0"))
        if status == "failed":
            continue
        last = 2 if status == "diverged" else 3
        for epoch in range(last + 1):
            diverged_here = status == "diverged" and epoch == last
            loss = float("inf") if diverged_here else 2.0 / (epoch + 1) + rng.normal(0, 0.02)
            accuracy = float("nan") if diverged_here else 0.2 * epoch + rng.normal(0, 0.01)
            for split, name, value in (("train", "loss", loss), ("val", "accuracy", accuracy),
                                       ("test", "accuracy", accuracy)):
                metrics.append((run, epoch * 5, epoch, split, name, value))
    study = {
        "name": EVIL, "description": EVIL, "file": "studies/evil.yaml", "spec": {"grid": {"model.norm": [EVIL]}},
        "report": {"selection": "final", "select_on": "val.accuracy", "metrics": ["test.accuracy"],
                   "curves": ["train.loss", "val.accuracy"]},
    }
    return FakeStore(
        path,
        study,
        pd.DataFrame(runs, columns=["run", "label", "replicate", "status", "axes", "error", "duration_s", "device",
                                    "code_version"]),
        pd.DataFrame(metrics, columns=["run", "step", "epoch", "split", "name", "value"]),
    )


@pytest.fixture
def driver(tmp_path):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip("needs /usr/bin/chromium and chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for option in OPTIONS:
        options.add_argument(option)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(30)
    browser.set_window_size(*WINDOW)
    try:
        yield browser
    finally:
        browser.quit()


def test_report_in_headless_chromium(driver, tmp_path):
    from selenium.webdriver.common.by import By

    result = write_report(make_store(tmp_path / "study"))
    driver.get(result.path.resolve().as_uri())

    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
    assert len(images) == 2
    for src, complete, width in images:
        assert src.startswith("figures/") and complete and width > 0, (src, complete, width)

    assert driver.execute_script("return typeof window.__pwned;") == "undefined"
    assert driver.execute_script("return document.scripts.length;") == 0
    with_onerror = driver.execute_script(
        "return Array.from(document.querySelectorAll('[onerror]'))"
        ".map(e => [e.tagName, e.getAttribute('src') || '']);")
    own = {src for src, _, _ in images}
    assert [e for e in with_onerror if not (e[0] == "IMG" and e[1] in own)] == []

    text = driver.find_element(By.TAG_NAME, "body").text
    assert EVIL in text
    assert driver.title == "study — ablab report"  # a study's name is validated ([A-Za-z0-9_.-]): no markup there


# ---- the layout of real studies' reports -----------------------------------------------------

def run_small_study(spec_file: str, out: Path, change) -> Path:
    """Run a shipped study, made small by ``change(spec)``, through the CLI with ``--report``; its page."""
    from ablab.cli import main

    spec = yaml.safe_load((REPO / spec_file).read_text(encoding="utf-8"))
    change(spec)
    path = out / Path(spec_file).name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    assert main(["run", str(path), "--out", str(out / "results"), "--threads", "1", "--report"]) == 0
    return out / "results" / "report" / "index.html"


def _quickstart(spec: dict) -> None:
    spec["base"]["epochs"] = 3


def _bn_dissect(spec: dict) -> None:
    spec["base"]["epochs"] = 1
    spec["grid"]["lr_scale"] = [1, 10]  # ×10: vanilla diverges, so the page shows a problem row too


LAYOUT = """
const root = document.documentElement;
const tables = Array.from(document.querySelectorAll('table')).map(t => {
  const box = t.getBoundingClientRect();
  return {wide: t.scrollWidth > t.clientWidth + 1, overflow: getComputedStyle(t).overflowX,
          right: box.right, hidden: box.width === 0};
});
const images = Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
  width: i.naturalWidth, link: i.parentElement.tagName === 'A' ? i.parentElement.getAttribute('href') : null}));
return {page: root.scrollWidth, view: root.clientWidth, tables: tables, images: images};
"""


def save_screenshot(driver, path: Path) -> Path:
    """A PNG of the whole page (not only the window), through the DevTools protocol."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 30000), "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    extra = os.environ.get("ABLAB_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name, spec_file, change, wide_tables", [
    ("quickstart", "studies/quickstart.yaml", _quickstart, 0),
    ("bn_dissect_cpu", "studies/bn_dissect/cpu.yaml", _bn_dissect, 1),
])
def test_layout_of_a_real_report(driver, tmp_path, name, spec_file, change, wide_tables):
    page = run_small_study(spec_file, tmp_path, change)
    driver.get(page.resolve().as_uri())
    layout = driver.execute_script(LAYOUT)
    shot = save_screenshot(driver, tmp_path / "artifacts" / f"report_{name}.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert layout["page"] <= layout["view"], "the page scrolls sideways"  # nothing overflows the body
    assert layout["images"], "no figure on the page"
    for image in layout["images"]:  # every figure loaded and linked to its full-size PNG
        assert image["complete"] and image["width"] > 0, image
        assert image["link"] == image["src"], image
    wide = [t for t in layout["tables"] if t["wide"] and not t["hidden"]]
    assert len(wide) >= wide_tables  # bn_dissect's final table (Δ, p, Holm, n per baseline) is wider than the page
    for table in wide:  # a wide table scrolls inside its own box, within the page
        assert table["overflow"] in ("auto", "scroll") and table["right"] <= layout["view"] + 1, table

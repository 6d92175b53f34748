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
    ("bn_dissect_cpu", "studies/bn_dissect/cpu.yaml", _bn_dissect, 0),  # its final table fits now (issue 21)
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
    assert len(wide) >= wide_tables
    for table in wide:  # a wide table scrolls inside its own box, within the page
        assert table["overflow"] in ("auto", "scroll") and table["right"] <= layout["view"] + 1, table


# ---- a researcher's study at 1,400 px: 5 metrics, two baselines, long labels (issue 21) --------------

WIDE_WINDOW = (1400, 900)
FIVE = (("train", "loss"), ("train", "accuracy"), ("val", "accuracy"), ("test", "accuracy"), ("test", "loss"))
FAMILIES = ("vanilla", "bn_gamma_beta", "bn_gamma", "bn_beta", "bn_none")


def five_metric_store(path: Path) -> FakeStore:
    """bn_dissect's shape without training: 5 families × 2 lr scales × 2 seeds, 5 metrics, lower and upper
    baselines (families), one variant whose SD is tiny (0.99999848 ± 0.00000061 before one precision per column)."""
    rng = np.random.default_rng(21)
    runs, metrics = [], []
    for f, family in enumerate(FAMILIES):
        for scale in (1, 10):
            label = f"{family}, lr_scale={scale}"
            for rep in range(2):
                run = f"r{f}{scale}{rep}"
                runs.append((run, label, rep, "done", {"label": family, "lr_scale": scale}, None, 1.0, "cpu (1 threads)",
                             "0.1.0"))
                for epoch in range(3):
                    for split, name in FIVE:
                        if family == "bn_none" and name == "accuracy":
                            value = 0.9999985 + rng.normal(0, 6e-7)
                        elif name == "accuracy":
                            value = 0.5 + 0.1 * f + 0.05 * epoch + rng.normal(0, 0.03)
                        else:
                            value = 2.0 / (epoch + 1) + 0.1 * f + rng.normal(0, 0.05)
                        metrics.append((run, epoch * 10, epoch, split, name, value))
    study = {"spec": {"grid": {"model.norm": ["none", "batchnorm"]}},
             "report": {"metrics": [f"{s}.{n}" for s, n in FIVE], "curves": ["train.loss"],
                        "baselines": {"lower": "vanilla", "upper": "bn_gamma_beta"}}}
    return FakeStore(path, study,
                     pd.DataFrame(runs, columns=["run", "label", "replicate", "status", "axes", "error", "duration_s",
                                                 "device", "code_version"]),
                     pd.DataFrame(metrics, columns=["run", "step", "epoch", "split", "name", "value"]))


FINAL_TABLE = """
const box = document.querySelector('.final') || document.querySelector('h2 + p + table');
const table = box.tagName === 'TABLE' ? box : box.querySelector('table');
const cells = Array.from(table.querySelectorAll('th')).map(th => {
  const r = th.getBoundingClientRect(); return {text: th.innerText, left: r.left, right: r.right}; });
return {scroll: table.scrollWidth, client: table.clientWidth, view: document.documentElement.clientWidth,
        page: document.documentElement.scrollWidth, cells: cells,
        titles: Array.from(table.querySelectorAll('[title]')).map(e => e.getAttribute('title'))};
"""


def test_every_metric_of_a_five_metric_study_is_visible_at_1400_px(driver, tmp_path):
    result = write_report(five_metric_store(tmp_path / "study"))
    driver.set_window_size(*WIDE_WINDOW)
    driver.get(result.path.resolve().as_uri())
    got = driver.execute_script(FINAL_TABLE)
    save_screenshot(driver, tmp_path / "artifacts" / "report_five_metrics_1400.png")
    assert got["scroll"] <= got["client"], got  # no sideways scrolling inside the table
    assert got["page"] <= got["view"], "the page scrolls sideways"
    heads = [c["text"].split("\n")[0] for c in got["cells"]]
    for s, n in FIVE:  # every metric's column lies inside the window
        cell = got["cells"][heads.index(f"{s}.{n}")]
        assert 0 <= cell["left"] and cell["right"] <= got["view"], cell
    # Δ and p read in the cell; the Holm-adjusted p and both n in its hover title
    assert any("Holm-adjusted p" in t and "n = 2 vs 2" in t for t in got["titles"])


def test_the_console_table_fits_120_columns(tmp_path):
    result = write_report(five_metric_store(tmp_path / "study"))
    lines = result.table_text.splitlines()
    assert max(len(line) for line in lines) <= 120, max(lines, key=len)
    text = result.table_text
    for s, n in FIVE:
        assert f"{s}.{n}" in text
    for family in FAMILIES:
        assert f"{family}, lr_scale=10" in text
    assert "0.99999848" not in text and "<0." in text  # the tiny SD at the column's precision

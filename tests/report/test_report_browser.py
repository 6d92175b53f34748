"""The report in a real browser: images load, nothing from the store runs as code.

Needs selenium plus Debian's ``chromium`` and ``chromium-driver``; skipped when they are absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablab.report import write_report
from fakestore import FakeStore

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
    assert driver.title.startswith(EVIL)

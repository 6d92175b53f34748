"""Every study in docs/adversarial.md runs as written, in order, and stores and reports what the page says."""

import re
from pathlib import Path

import yaml

from ablab.cli import main
from conftest import stored

DOC = Path(__file__).resolve().parents[2] / "docs" / "adversarial.md"


def _examples() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)]


def test_the_pages_studies_run_store_the_named_metrics_and_report_them(tmp_path):
    white_box, transfer = _examples()
    (tmp_path / "white.yaml").write_text(yaml.safe_dump(white_box))
    assert main(["run", str(tmp_path / "white.yaml"), "--out", str(tmp_path / "results" / "adv_digits"),
                 "--threads", "1"]) == 0
    metrics, runs = stored(tmp_path / "results" / "adv_digits")
    assert len(runs) == 4 and set(runs.status) == {"done"}
    names = set(metrics[metrics.split == "test"].name)
    assert {"fgsm_accuracy", "pgd5_accuracy", "pgd20_accuracy", "spsa_accuracy", "pgd20_loss", "fgsm_clean_accuracy",
            "logit_variance", "logit_range", "adv_logit_variance", "adv_logit_range"} <= names
    transfer["source"]["study"] = str(tmp_path / "results" / "adv_digits")
    (tmp_path / "transfer.yaml").write_text(yaml.safe_dump(transfer))
    assert main(["run", str(tmp_path / "transfer.yaml"), "--out", str(tmp_path / "results" / "transfer"),
                 "--threads", "1"]) == 0
    metrics, runs = stored(tmp_path / "results" / "transfer")
    assert len(runs) == 12 and set(metrics.name) >= {"transfer_accuracy", "transfer_source_accuracy"}
    for name, heading in (("adv_digits", "Adversarial robustness (white-box)"), ("transfer", "Black-box transfer")):
        assert main(["report", str(tmp_path / "results" / name)]) == 0
        assert heading in (tmp_path / "results" / name / "report" / "index.html").read_text()

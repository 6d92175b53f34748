"""The spec section shows the runs' resolved settings (stored RunSpecs with every default), not the spec as written."""

from __future__ import annotations

import copy
import html

import pandas as pd
import yaml

from ablab.report.context import ReportContext
from ablab.report.sections.spec import Spec, flatten, split_settings, unflatten
from fakestore import FakeStore, parse_html

BASE = {"data": {"name": "digits", "size": 8}, "drop_last": False, "epochs": 5,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "seeds": {"init": 0, "shuffle": 0}}


def _runs() -> pd.DataFrame:
    rows = []
    for label, optimizer in (("sgd", BASE["optimizer"]), ("adam", {"name": "adam", "lr": 0.001})):
        for rep in (0, 1):
            spec = copy.deepcopy(BASE)
            spec["optimizer"] = dict(optimizer)
            spec["seeds"] = {"init": rep, "shuffle": rep}
            rows.append((f"{label}{rep}", label, rep, "done", spec))
    return pd.DataFrame(rows, columns=["run", "label", "replicate", "status", "spec"])


def test_settings_split_into_shared_per_variant_and_per_seed():
    shared, per_variant, per_seed = split_settings(_runs())
    assert shared == {"data.name": "digits", "data.size": 8, "drop_last": False, "epochs": 5}
    assert list(per_variant) == ["sgd", "adam"]
    assert per_variant["sgd"] == {"optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.momentum": 0.9}
    assert per_variant["adam"]["optimizer.name"] == "adam" and per_variant["adam"]["optimizer.lr"] == 0.001
    assert per_seed == ["seeds.init", "seeds.shuffle"]
    tree = {"a": {"b": 1, "c": [1, 2]}, "d": {}}
    assert unflatten(flatten(tree)) == tree


def test_the_section_shows_defaults_the_written_spec_never_mentions(tmp_path):
    written = {"base": {"data": "digits", "optimizer": {"name": "sgd", "lr": 0.05}}, "grid": {"optimizer": ["…"]}}
    store = FakeStore(tmp_path, {"name": "s", "spec": written}, _runs(),
                      pd.DataFrame(columns=["run", "step", "epoch", "split", "name", "value"]))
    page = Spec().render(ReportContext(store, tmp_path / "out")).html
    parsed = parse_html(page)
    resolved = yaml.safe_load(html.unescape(page.split("<pre class=\"resolved\">", 1)[1].split("</pre>", 1)[0]))
    assert resolved == {"data": {"name": "digits", "size": 8}, "drop_last": False, "epochs": 5}
    text = "".join(parsed.text)
    assert "optimizer.momentum" in text and "—" in text  # adam has no momentum
    assert "seeds.init" in text and "Study spec as written" in text

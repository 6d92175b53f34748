"""The runs' fully resolved settings (their RunSpecs, every default filled in), and the spec as written.

The stored RunSpecs are split by what varies: settings every run shares (as YAML), settings
that differ between variants (a table, one row per variant), and those that differ only
between the seeds of a variant (named). The study spec as written follows, folded.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import yaml

from ablab.optim.groups import class_settings
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import e
from ablab.report.numbers import MISSING

_ABSENT = object()  # a setting one RunSpec lacks (e.g. momentum under adam)


@REPORT_SECTIONS.register("spec")
class Spec(ReportSection):
    """The runs' resolved settings (shared, per variant, per seed) and the study spec as written."""

    def render(self, ctx: ReportContext) -> PagePart:
        shared, per_variant, per_seed = split_settings(ctx.runs)
        html = ["<h2>Study spec (resolved)</h2>"]
        if shared or per_variant:
            html.append("<p class=\"note\">What the runs actually ran with: each run's stored RunSpec, every "
                        "default filled in. Settings shared by every run:</p>")
            html.append(f"<pre class=\"resolved\">{e(_yaml(unflatten(shared)))}</pre>")
            html.append(_variant_table(per_variant))
            html.append(_param_groups(ctx.runs))
            if per_seed:
                html.append("<p class=\"note\">Differing only between the seeds of a variant: "
                            + ", ".join(f"<code>{e(k)}</code>" for k in per_seed) + ".</p>")
        else:
            html.append("<p class=\"note\">No run stored its resolved settings.</p>")
        spec = ctx.study.model_dump(mode="json")
        html.append("<details><summary>Study spec as written</summary>"
                    f"<pre>{e(_yaml(spec))}</pre></details>")
        return PagePart("\n".join(html))


def _param_groups(runs: pd.DataFrame) -> str:
    """Where runs set a weight-decay block or lr multipliers: λ, centre and lr factor per parameter class."""
    seen: dict[str, list[str]] = {}
    for label, spec in zip(runs["label"], runs["spec"]) if "spec" in runs else ():
        if not isinstance(spec, dict):
            continue
        wd, mult = spec.get("weight_decay") or {}, spec.get("lr_multipliers") or {}
        if not mult and not wd.get("value"):
            continue
        if wd.get("value"):
            decay = [wd["value"], wd.get("params", "all"), wd.get("mode", "")]
        else:  # the optimizer's own weight_decay, on every group
            decay = [(spec.get("optimizer") or {}).get("weight_decay") or 0.0, "all", "optimizer"]
        key = json.dumps([*decay, mult], sort_keys=True)
        seen.setdefault(key, [])
        if label not in seen[key]:
            seen[key].append(label)
    if not seen:
        return ""
    rows = []
    for key, labels in seen.items():
        value, rule, mode, mult = json.loads(key)
        cells = "".join(f"<td>{e(cls)}: λ {lam:g}{f' → {c:g}' if c else ''}, lr ×{f:g}</td>"
                        for cls, lam, c, f in class_settings(value, rule, mult))
        rows.append(f"<tr><td>{e(', '.join(labels))}</td><td>{e(rule)} ({e(mode)})</td>{cells}</tr>")
    return ("<p class=\"note\">Parameter groups (ablab.optim.groups): weight decay λ (toward c where c ≠ 0) and "
            "lr multiplier per parameter class; a class the model lacks has no group.</p>"
            "<table class=\"param-groups\"><tr><th>variants</th><th>decay rule</th><th>weight</th><th>bias</th>"
            "<th>norm γ</th><th>norm β</th></tr>" + "".join(rows) + "</table>")


def split_settings(runs: pd.DataFrame) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """(settings every run shares, label → settings that differ between variants, paths differing only by seed).

    Settings are dotted paths into the RunSpecs (``optimizer.lr``); lists are single values.
    """
    if "spec" not in runs:
        return {}, {}, []
    flat = [(label, flatten(spec)) for label, spec in zip(runs["label"], runs["spec"]) if isinstance(spec, dict)]
    paths = list(dict.fromkeys(p for _, f in flat for p in f))
    shared, by_variant, by_seed = {}, [], []
    for path in paths:
        values = [_key(f.get(path, _ABSENT)) for _, f in flat]
        if len(set(values)) == 1:
            shared[path] = flat[0][1][path]
            continue
        per_label: dict[str, set] = {}
        for (label, _), value in zip(flat, values):
            per_label.setdefault(label, set()).add(value)
        varies_within_a_variant = any(len(v) > 1 for v in per_label.values())
        (by_seed if varies_within_a_variant else by_variant).append(path)
    first = {}
    for label, f in flat:
        first.setdefault(label, f)
    per_variant = {label: {p: f.get(p, _ABSENT) for p in by_variant} for label, f in first.items()}
    return shared, per_variant if by_variant else {}, by_seed


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; an empty mapping stays one value."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _variant_table(per_variant: dict[str, dict[str, Any]]) -> str:
    if not per_variant:
        return ""
    paths = list(next(iter(per_variant.values())))
    head = "".join(f"<th>{e(p)}</th>" for p in ["variant", *paths])
    rows = "\n".join(
        f"<tr><td>{e(label)}</td>" + "".join(f"<td>{e(_text(values[p]))}</td>" for p in paths) + "</tr>"
        for label, values in per_variant.items())
    return ("<p class=\"note\">Settings that differ between variants (first seed of each):</p>\n"
            f"<table class=\"resolved\"><tr>{head}</tr>\n{rows}\n</table>")


def _key(value: Any) -> str:
    return "\0absent" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str:
    if value is _ABSENT:
        return MISSING
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _yaml(tree: Any) -> str:
    try:
        return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError:
        return json.dumps(tree, indent=2, default=str)

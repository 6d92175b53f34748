"""The study spec as the store resolved it, as YAML."""

from __future__ import annotations

import json

import yaml

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import Part, ReportContext, ReportSection
from ablab.report.html import e


@REPORT_SECTIONS.register("spec")
class Spec(ReportSection):
    """The resolved study spec as YAML, so the page names everything that produced its numbers."""

    order = 120

    def render(self, ctx: ReportContext) -> Part:
        spec = ctx.study.get("spec") or {}
        try:
            text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, default_flow_style=False)
        except yaml.YAMLError:
            text = json.dumps(spec, indent=2, default=str)
        return Part(f"<h2>Study spec (resolved)</h2>\n<pre>{e(text)}</pre>")

"""The reading commands' details: ``status --failed``, ``show RUN``, ``export``, and finding a study's results.

They open the store read-only. A spec file given where a results directory is expected stands for
the directory ``ablab run`` writes it to by default: ``results/<study name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ablab.errors import AblabError


def results_dir(target: str) -> Path:
    """``target`` if it is a results directory; for a study YAML file, ``results/<its name>``."""
    path = Path(target)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from ablab.spec import load_study

        found = Path("results") / load_study(path).name
        if not (found / "ablab.db").is_file():
            raise AblabError(f"{target}: no results in {found} yet (ablab run {target}; a run with --out "
                             "elsewhere: give that directory)")
        return found
    return path


def failed_runs_text(runs: pd.DataFrame) -> str:
    """Each failed run's header line and stored traceback; a line saying so when none failed."""
    failed = runs[runs["status"] == "failed"]
    if failed.empty:
        return "no failed runs"
    parts = []
    for r in failed.itertuples():
        parts.append(f"--- {r.run}  {r.label} #{r.replicate}  failed ---\n{r.error.rstrip() if isinstance(r.error, str) else '(no error stored)'}")
    return "\n\n".join(parts)


def find_run(runs: pd.DataFrame, run_id: str) -> pd.Series:
    """The run whose id is ``run_id`` or starts with it (unique); one clear error otherwise."""
    found = runs[runs["run"].str.startswith(run_id)] if run_id else runs.iloc[:0]
    exact = found[found["run"] == run_id]
    if len(exact) == 1:
        return exact.iloc[0]
    if len(found) == 1:
        return found.iloc[0]
    if found.empty:
        raise AblabError(f"no run '{run_id}' in this study (ablab status lists the run ids)")
    raise AblabError(f"'{run_id}' starts {len(found)} run ids ({', '.join(found['run'][:5])}); give more of it")


def show_text(run: pd.Series, metrics: pd.DataFrame) -> str:
    """One run: what it is, how it ended, its final value of every metric, its spec and its error."""
    lines = [f"run {run['run']}: {run['label']} #{run['replicate']}",
             f"status: {run['status']}" + (f" in {run['duration_s']:.1f}s" if _number(run["duration_s"]) else ""),
             f"device: {_text(run['device'])}   code version: {_text(run['code_version'])}"]
    if run["axes"]:
        lines.append("axes: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in run["axes"].items()))
    if not metrics.empty:
        last = metrics.sort_values("step").groupby(["split", "name"], sort=True).tail(1)
        lines.append("final metrics (last recorded value):")
        lines += [f"  {m.split}.{m.name} = {m.value:.6g}  (epoch {m.epoch}, step {m.step})"
                  for m in last.sort_values(["split", "name"]).itertuples()]
    else:
        lines.append("final metrics: none recorded")
    lines.append("spec:")
    lines += ["  " + line for line in json.dumps(run["spec"], indent=2, sort_keys=True).splitlines()]
    if isinstance(run["error"], str) and run["error"]:
        lines.append("error:")
        lines.append(str(run["error"]).rstrip())
    return "\n".join(lines)


def _text(x) -> str:
    return x if isinstance(x, str) and x else "—"  # a run not started yet has NaN there


def _number(x) -> bool:
    return x is not None and x == x

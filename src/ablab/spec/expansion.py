"""Expansion: a study becomes its runs (variants × seed replicates, each fully resolved and validated).

Training studies: the grid/zip axes applied to ``base``, times the seed replicates; an ``init_from``
is resolved to a concrete source run and epoch (in this study or a stored one, read-only). A
``select`` in ``init_from`` continues the k best runs of a stored study. Post-hoc studies: the
stored runs of ``source`` arranged into units (single runs, ordered pairs, disjoint groups, or each
run's snapshots).

A stored study is read through ``open_stored`` (path → a read-only store, e.g. ``ablab.load``), which
the caller hands in: the spec layer never imports the store.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import pydantic
from pydantic import NonNegativeInt, PositiveInt

from ablab.errors import SpecError, StoreError
from ablab.seeding import STREAMS
from ablab.spec.labels import make_label
from ablab.spec.loading import _spec_error, set_path
from ablab.spec.models import (EvalSpec, Groups, Member, MetricRef, RunSpec, SeedAxis, Study, Variant, _Strict,
                               cyclic_schedules)
from ablab.selectors import matches

MAX_RUNS = 100_000  # a study larger than this is almost surely a typo (raise with --max-runs)
SEED_AXES = tuple(f"seeds.{field}" for field in SeedAxis.model_fields)  # per-variant seed settings, not base paths
OpenStored = Callable[[str], Any]  # path → a read-only store: runs(), checkpoint_epochs(), final_values() … close()


class Selection(_Strict):
    """Continue the ``k`` best finished runs of a stored study by the final value of ``metric``."""

    metric: MetricRef
    k: PositiveInt
    mode: Optional[Literal["min", "max"]] = None  # default: the direction the metric's evaluator declared


class InitFromSpec(_Strict):
    """``init_from`` as written in a study: a run (id or selector) or a selection, and the epoch."""

    study: Optional[str] = None
    run: Any = None
    select: Optional[Selection] = None
    epoch: NonNegativeInt


def _axis_combinations(study: Study) -> list[dict[str, Any]]:
    blocks: list[list[dict[str, Any]]] = []
    if study.grid:
        keys = list(study.grid)
        blocks.append([dict(zip(keys, combo)) for combo in itertools.product(*study.grid.values())])
    for group in study.zip:
        if group:
            n = len(next(iter(group.values())))
            blocks.append([{k: vals[i] for k, vals in group.items()} for i in range(n)])
    combos = [{}]
    for block in blocks:
        combos = [{**a, **b} for a in combos for b in block]
    return combos


def _combination_count(study: Study) -> int:
    """Variants the grid and zip axes make: the product of their lengths (nothing is built)."""
    return math.prod(len(values) for values in study.grid.values()) * math.prod(
        len(next(iter(group.values()))) for group in study.zip if group)


def _replicates(value: Any) -> int:
    """A ``seeds.replicates`` axis value as a count (a value that is no count is refused later, as 1 here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _planned_runs(study: Study) -> int:
    """Runs of a training study, variants × replicates, from the axes' lengths before any run is built."""
    path = "seeds.replicates"
    blocks = [study.grid, *(group for group in study.zip if group)]
    held = next((b for b in blocks if path in b), None)
    if held is None:
        return _combination_count(study) * study.seeds.replicates
    others = [len(v) for k, v in held.items() if k != path] if held is study.grid else []
    rows = math.prod(others) * sum(_replicates(x) for x in held[path])
    rest = [b for b in blocks if b is not held]
    return rows * math.prod(math.prod(len(v) for v in b.values()) if b is study.grid else len(next(iter(b.values())))
                            for b in rest if b)


def _refuse_above(n: int, max_runs: int, file: str, study: Study) -> None:
    """A study of more than ``max_runs`` runs is refused before it is built, naming the count."""
    if n > max_runs:
        field = "grid" if study.grid else ("zip" if study.zip else "seeds.replicates")
        raise SpecError(f"the study expands to {n} runs, too many: more than {max_runs}; raise the cap with "
                        "--max-runs if that is meant", file=file, field=field)


def expand(study: Study, file: str = "", max_runs: int = MAX_RUNS, open_stored: OpenStored | None = None
           ) -> list[Variant]:
    """Every run of the study, each validated; init_from and post-hoc sources resolved read-only.

    ``open_stored`` opens a stored study that ``init_from.study`` or ``source.study`` names.
    """
    if study.post_hoc:
        variants = _expand_post_hoc(study, file, open_stored, max_runs)
    else:
        variants = _expand_training(study, file, open_stored, max_runs)
    _refuse_above(len(variants), max_runs, file, study)  # init_from.select continues k runs per variant
    seen: dict[str, str] = {}
    for v in variants:
        if v.id in seen:
            raise SpecError(f"variants '{seen[v.id]}' and '{v.label}' are the same experiment "
                            "(an axis does not change the run)", file=file, field="grid")
        seen[v.id] = v.label
    return variants


# ---------------------------------------------------------------- training studies


def _expand_training(study: Study, file: str, open_stored: OpenStored | None, max_runs: int) -> list[Variant]:
    _check_no_imports(study, file)
    _refuse_above(_planned_runs(study), max_runs, file, study)  # before building millions of dicts
    combos = _axis_combinations(study)
    named = frozenset(k for group in study.zip if "label" in group for k in group)
    _check_unique_labels(combos, named, file)
    raws = []
    for axes in combos:
        label = make_label(axes, named)
        seed_axis = _seed_axis(study, axes, label, file)
        for r in range(seed_axis.replicates):
            raws.append((_raw_run(study, seed_axis, axes, r, file), label, axes, r))
    # runs without an in-study source first: they are what in-study init_from selectors match
    per_raw: list[list[Variant]] = [[] for _ in raws]
    for i, (raw, label, axes, r) in enumerate(raws):
        if not _in_study_source(raw):
            per_raw[i] = _variants_of(raw, label, axes, r, file, [], open_stored)
    sources = [v for vs in per_raw for v in vs]
    for i, (raw, label, axes, r) in enumerate(raws):
        if _in_study_source(raw):
            per_raw[i] = _variants_of(raw, label, axes, r, file, sources, open_stored)
    return [v for vs in per_raw for v in vs]


def _check_unique_labels(combos: list[dict[str, Any]], named: frozenset[str], file: str) -> None:
    """Variants with different settings have different labels (a report row is one variant)."""
    first: dict[str, dict[str, Any]] = {}
    for axes in combos:
        label = make_label(axes, named)
        other = first.setdefault(label, axes)
        differ = [k for k in axes if k != "label" and axes[k] != other.get(k)]
        if differ:
            k = differ[0]
            raise SpecError(f"two variants are labelled '{label}' but differ in {k} ({other.get(k)!r} and "
                            f"{axes[k]!r}); give each variant its own label", file=file,
                            field="zip" if "label" in axes else "grid")


def _seed_axis(study: Study, axes: dict[str, Any], label: str, file: str) -> SeedAxis:
    """The study's ``seeds``, with this variant's ``seeds.vary`` / ``seeds.replicates`` / ``seeds.base`` axes."""
    given = {path.split(".", 1)[1]: value for path, value in axes.items() if path in SEED_AXES}
    if not given:
        return study.seeds
    try:
        return SeedAxis.model_validate({**study.seeds.model_dump(), **given})
    except pydantic.ValidationError as err:
        e = _spec_error(err, file, prefix="seeds")
        raise SpecError(f"{e.message} (variant '{label}')", field=e.field, file=file) from None


def _replicate_seeds(seeds: SeedAxis, r: int) -> dict[str, Any]:
    """Replicate r's seeds: ``base + r`` for a varied stream, ``base`` for a held one (``bitflip``: None)."""
    held = {s: seeds.base for s in STREAMS} | {"bitflip": None}
    return {s: seeds.base + r if s in seeds.vary else held[s] for s in STREAMS}


def _raw_run(study: Study, seeds: SeedAxis, axes: dict[str, Any], r: int, file: str) -> dict[str, Any]:
    raw = copy.deepcopy(study.base)
    if study.imports:
        raw["imports"] = list(study.imports)
    for path, value in axes.items():
        if path != "label" and path not in SEED_AXES:
            set_path(raw, path, copy.deepcopy(value), where=path)
    raw.setdefault("seeds", {})
    if not isinstance(raw["seeds"], dict):
        raise SpecError("base.seeds must be a mapping of stream: int", file=file, field="base.seeds")
    varied = sorted(set(raw["seeds"]) & set(seeds.vary))
    if varied and "seeds.vary" not in axes:  # the replicate's seed would silently replace the written one
        raise SpecError(f"base.seeds.{varied[0]} is set, but seeds.vary makes '{varied[0]}' the replicate's seed "
                        f"(seeds.base + replicate); remove it from seeds.vary to fix it, or from base.seeds",
                        file=file, field=f"base.seeds.{varied[0]}")
    # a seeds.vary axis varies a stream in some rows and holds it (at base.seeds) in the others
    raw["seeds"] = {**_replicate_seeds(seeds, r), **{k: v for k, v in raw["seeds"].items() if k not in seeds.vary}}
    if "kernels" in seeds.vary:  # no seed: the replicates differ only by the kernels' own nondeterminism
        raw["deterministic"] = False
    raw["replicate"] = r
    return raw


def _check_no_imports(study: Study, file: str) -> None:
    """The modules to import are the study's, the same for every run: not a base setting, not an axis."""
    axes = [*study.grid, *(k for group in study.zip for k in group)]
    for where, keys in (("base", study.base), ("grid", axes)):
        if "imports" in keys or "code" in keys:
            key = "imports" if "imports" in keys else "code"
            raise SpecError(f"'{key}' is not a run setting: list the modules to import at the top of the study "
                            "(imports: [my_package.models])", file=file, field=f"{where}.{key}")


def _in_study_source(raw: dict[str, Any]) -> bool:
    init = raw.get("init_from")
    return isinstance(init, dict) and init.get("study") is None


def _variants_of(raw: dict, label: str, axes: dict, r: int, file: str, sources: list[Variant],
                 open_stored: OpenStored | None) -> list[Variant]:
    """The run(s) of one raw variant: one, or one per selected source of an ``init_from.select``."""
    where = f" (variant '{label}')" if axes else ""
    init = raw.get("init_from")
    if init is None:
        return [Variant(spec=_validate(raw, label, axes, file), label=label, axes=axes, replicate=r)]
    try:
        written = InitFromSpec.model_validate(init)
    except pydantic.ValidationError as err:
        e = _spec_error(err, file, prefix="base.init_from")
        raise SpecError(e.message + where, field=e.field, file=file) from None
    out = []
    for source, extra in _resolve_sources(written, r, file, sources, where, open_stored):
        run = copy.deepcopy(raw)
        run["init_from"] = source
        origin = {}
        if extra is not None:  # a selection: continue with the source's seeds, replicate = rank
            run["seeds"] = extra["seeds"]
            run["replicate"] = extra["rank"]
            origin = {"selection": extra["record"]}
        spec = _validate(run, label, axes, file)
        out.append(Variant(spec=spec, label=label, axes=axes, replicate=run["replicate"], origin=origin))
    return out


def _validate(raw: dict, label: str, axes: dict, file: str) -> RunSpec:
    try:
        return RunSpec.model_validate(raw)
    except pydantic.ValidationError as err:
        e = _spec_error(err, file, prefix="base")
        where = f" (variant '{label}')" if axes else ""
        raise SpecError(e.message + where, field=_axis_field(e.field, axes), file=file) from None


def _axis_field(field: str | None, axes: dict) -> str | None:
    """``axis 'model.chanels'`` where a grid or zip axis of the variant set the failing base field (the key
    as the study writes it), else the field itself."""
    path = field[len("base."):] if field and field.startswith("base.") else None
    for key in axes:
        if path is not None and key != "label" and (path == key or path.startswith(key + ".")):
            return f"axis '{key}'"
    return field


def _resolve_sources(written: InitFromSpec, replicate: int, file: str, sources: list[Variant], where: str,
                     open_stored: OpenStored | None) -> list[tuple[dict, Optional[dict]]]:
    """[(resolved init_from, selection details or None)] for one raw run."""
    field = "base.init_from"
    narrowed_select = written.study is not None and written.select is not None  # 'run' filters the pool
    if (written.run is None) == (written.select is None) and not narrowed_select:
        raise SpecError("init_from needs exactly one of 'run' (an id or an axis selector) and 'select' (with a "
                        "stored 'study', a 'run' mapping may narrow the 'select')" + where, file=file, field=field)
    if written.study is None:
        if written.select is not None:
            raise SpecError("init_from.select chooses among the runs of a finished study: give its 'study' path"
                            + where, file=file, field=field)
        candidates = [_Candidate(v.id, v.label, v.replicate, v.axes, v.spec.model_dump(mode="json"), v.spec)
                      for v in sources]
        chosen = _pick_one(written.run, candidates, replicate, file, f"{field}.run", "this study", where)
        _check_planned_checkpoint(chosen, written.epoch, file, where)
        return [({"run": chosen.id, "epoch": written.epoch, "study": None}, None)]
    path = str(Path(written.study).resolve())
    store = _open_source(open_stored, written.study, file, f"{field}.study")
    try:
        candidates = _stored_candidates(store)
        if written.select is None:
            chosen = _pick_one(written.run, candidates, replicate, file, f"{field}.run", written.study, where)
            _check_stored_checkpoint(store, chosen, written.epoch, written.study, file, where)
            return [({"run": chosen.id, "epoch": written.epoch, "study": path}, None)]
        return _select(store, written, candidates, path, file, where)
    finally:
        store.close()


class _Candidate:
    def __init__(self, id: str, label: str, replicate: int, axes: dict, spec: dict, model=None, status: str = "done"):
        self.id, self.label, self.replicate, self.axes, self.spec = id, label, replicate, axes, spec
        self.model, self.status = model, status

    def matches(self, selector: dict) -> bool:
        return matches(selector, axes=self.axes, spec=self.spec, label=self.label, replicate=self.replicate)


def _pick_one(selector: Any, candidates: list[_Candidate], replicate: int, file: str, field: str, where_from: str,
              where: str) -> _Candidate:
    if isinstance(selector, str):
        found = [c for c in candidates if c.id == selector]
        if not found:
            raise SpecError(f"no run '{selector}' in {where_from}{where}", file=file, field=field)
        return found[0]
    if not isinstance(selector, dict):
        raise SpecError(f"a run is a run id or a mapping of axis paths to values, got {selector!r}{where}",
                        file=file, field=field)
    found = [c for c in candidates if c.matches(selector)]
    if len(found) > 1 and "replicate" not in selector:  # replicate r continues the source's replicate r
        same = [c for c in found if c.replicate == replicate]
        found = same if len(same) == 1 else found
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs ({', '.join(sorted({c.label for c in found}))})"
        raise SpecError(f"{what} of {where_from} match {selector}; a source is exactly one run{where}",
                        file=file, field=field)
    return found[0]


def _check_planned_checkpoint(c: _Candidate, epoch: int, file: str, where: str) -> None:
    """An in-study source continues no run itself (whether it saves that epoch is checked with its plan,
    in validation)."""
    if c.model.init_from is not None:
        raise SpecError(f"the source run '{c.label}' continues another run itself; chain through a stored study"
                        + where, file=file, field="base.init_from")


def _open_source(open_stored: OpenStored | None, path: str, file: str, field: str):
    """The stored study at ``path``, read-only; a store that cannot be read is a ``SpecError`` at ``field``."""
    if open_stored is None:
        raise TypeError(f"the study reads the stored study '{path}': pass expand(..., open_stored=ablab.load)")
    try:
        return open_stored(path)
    except StoreError as err:
        raise SpecError(f"source study: {err}", file=file, field=field) from None


def _stored_candidates(store) -> list[_Candidate]:
    runs = store.runs()
    return [_Candidate(r.run, r.label, int(r.replicate), r.axes, r.spec, status=r.status)
            for r in runs.itertuples() if r.status == "done"]


def _check_stored_checkpoint(store, c: _Candidate, epoch: int, where_from: str, file: str, where: str) -> None:
    have = store.checkpoint_epochs(c.id)
    if epoch not in have:
        raise SpecError(f"run {c.id} ('{c.label}') of {where_from} has no checkpoint at epoch {epoch} "
                        f"(it has: {have or 'none'})" + where, file=file, field="base.init_from.epoch")


def _select(store, written: InitFromSpec, candidates: list[_Candidate], path: str, file: str,
            where: str) -> list[tuple[dict, dict]]:
    sel = written.select
    split, _, name = sel.metric.partition(".")
    if written.run is not None and not isinstance(written.run, dict):
        raise SpecError("with 'select', 'run' is an optional selector mapping", file=file, field="base.init_from.run")
    pool = [c for c in candidates if c.matches(written.run or {})]
    unfinished = store.status_counts()
    pending = sum(n for s, n in unfinished.items() if s not in ("done", "diverged", "failed"))
    if pending:
        raise SpecError(f"the source study {written.study} has {pending} unfinished runs; finish it before selecting"
                        + where, file=file, field="base.init_from.study")
    finals = store.final_values(split, name)
    if not finals:
        recorded = store.metric_names()
        close = difflib.get_close_matches(sel.metric, recorded, n=1, cutoff=0.4)
        raise SpecError(f"no run of {written.study} recorded '{sel.metric}' (its runs recorded: "
                        f"{', '.join(recorded) or 'no metric'})" + (f"; did you mean '{close[0]}'?" if close else "")
                        + where, file=file, field="base.init_from.select.metric")
    mode = sel.mode or store.metric_direction(split, name)
    if mode not in ("min", "max"):
        raise SpecError(f"say whether the lowest or the highest '{sel.metric}' wins: select.mode: min | max"
                        + where, file=file, field="base.init_from.select.mode")
    scored = [(finals[c.id], c) for c in pool if c.id in finals and math.isfinite(finals[c.id])]
    if len(scored) < sel.k:
        raise SpecError(f"select wants the best {sel.k} runs by {sel.metric}; {written.study} has {len(scored)} "
                        "finished runs with a finite value" + where, file=file, field="base.init_from.select.k")
    scored.sort(key=lambda x: x[0], reverse=(mode == "max"))
    out = []
    for rank, (value, c) in enumerate(scored[: sel.k]):
        _check_stored_checkpoint(store, c, written.epoch, written.study, file, where)
        record = {"metric": sel.metric, "mode": mode, "k": sel.k, "rank": rank, "value": value, "source_run": c.id,
                  "source_label": c.label, "source_replicate": c.replicate, "pool": len(scored), "study": path}
        out.append(({"run": c.id, "epoch": written.epoch, "study": path},
                    {"seeds": c.spec["seeds"], "rank": rank, "record": record}))
    return out


# ---------------------------------------------------------------- post-hoc studies


def _expand_post_hoc(study: Study, file: str, open_stored: OpenStored | None, max_runs: int) -> list[Variant]:
    src = study.source
    store = _open_source(open_stored, src.study, file, "source.study")
    try:
        pool = [c for c in _stored_candidates(store) if c.matches(src.runs)]
        if not pool:
            raise SpecError(f"no finished run of {src.study} matches {src.runs or 'anything'}", file=file,
                            field="source.runs")
        by_kind = [(kind, _units_of(store, pool, study, kind, file)) for kind in study.unit_kinds]
        names = _source_variant_names(store, pool)
    finally:
        store.close()
    path = str(Path(src.study).resolve())
    _check_no_imports(study, file)
    internal = sorted(set(study.base) & {"kind", "members", "source_study", "replicate"})
    if internal:
        raise SpecError(f"'{internal[0]}' is set by the study's source and members, not in base", file=file,
                        field=f"base.{internal[0]}")
    out = []
    named = frozenset(k for group in study.zip if "label" in group for k in group)
    combos = _axis_combinations(study)

    def units_of(axes: dict[str, Any]) -> tuple[list[list[Member]], list[str]]:
        kind = study.unit_kind(axes)
        return next(made for k, made in by_kind if k == kind)

    _refuse_above(sum(len(units_of(axes)[0]) for axes in combos), max_runs, file, study)
    _check_unique_labels(combos, named, file)
    for axes in combos:
        axes_label = make_label(axes, named) if axes else ""
        units, left_out = units_of(axes)
        count: dict[str, int] = {}
        for unit in units:
            label = ", ".join(x for x in (_unit_label(unit, names), axes_label) if x)
            index = count[label] = count.get(label, -1) + 1
            raw = copy.deepcopy(study.base)
            for p, value in axes.items():
                if p not in ("label", "members"):
                    set_path(raw, p, copy.deepcopy(value), where=p)
            raw.update(source_study=path, members=[m.model_dump() for m in unit], replicate=index)
            if study.imports:
                raw["imports"] = list(study.imports)
            try:
                spec = EvalSpec.model_validate(raw)
            except pydantic.ValidationError as err:
                e = _spec_error(err, file, prefix="base")
                raise SpecError(e.message, field=e.field, file=file) from None
            origin = {"members": [m.label for m in unit], "member_runs": [m.run for m in unit],
                      "epochs": [m.epoch for m in unit], "left_out": left_out}
            out.append(Variant(spec=spec, label=label, axes=axes, replicate=index, origin=origin))
    return out


def _units_of(store, pool: list[_Candidate], study: Study, kind: Any, file: str
              ) -> tuple[list[list[Member]], list[str]]:
    """The units of one kind over the source runs, and the runs left out."""
    if kind == "snapshots":
        return [_snapshot_members(store, c, study, file) for c in pool], []
    return _units([_final_or_fixed_member(store, c, study.source, file) for c in pool], kind, file)


def _final_or_fixed_member(store, c: _Candidate, src, file: str) -> Member:
    """A run's checkpoint at ``source.checkpoint`` (``final`` or an epoch) as a unit member."""
    epoch = store.final_epoch(c.id) if src.checkpoint == "final" else src.checkpoint
    have = store.checkpoint_epochs(c.id)
    if epoch is None or epoch not in have:
        what = "final checkpoint" if src.checkpoint == "final" else f"checkpoint at epoch {epoch}"
        raise SpecError(f"run {c.id} ('{c.label}') of {src.study} has no {what} (it has: {have or 'none'}; "
                        "record.checkpoints of the source study decides)", file=file, field="source.checkpoint")
    return Member(run=c.id, epoch=epoch, label=f"{c.label} #{c.replicate}", spec=_stored_spec(c, src.study, file))


def _snapshot_members(store, c: _Candidate, study: Study, file: str) -> list[Member]:
    """One run's cycle-end checkpoints (its schedule's snapshots), in epoch order: one unit."""
    src = study.source
    if "checkpoint" in src.model_fields_set:
        raise SpecError("members: snapshots takes the checkpoints at the end of each cycle of the run's schedule; "
                        "leave source.checkpoint out", file=file, field="source.checkpoint")
    spec = _stored_spec(c, src.study, file)
    epochs = spec.snapshot_epochs
    if not epochs:
        raise SpecError(f"run {c.id} ('{c.label}') of {src.study} has no cyclic schedule (schedule "
                        f"'{spec.schedule['name']}'); members: snapshots needs schedule {cyclic_schedules()}",
                        file=file, field="members")
    have = store.checkpoint_epochs(c.id)
    missing = [e for e in epochs if e not in have]
    if missing:
        raise SpecError(f"run {c.id} ('{c.label}') of {src.study} has no checkpoint at the cycle ends {missing} (it "
                        f"has: {have or 'none'}; set record.checkpoints.snapshots: true in the source study)",
                        file=file, field="members")
    label = f"{c.label} #{c.replicate}"
    return [Member(run=c.id, epoch=e, label=f"{label} @{e}", spec=spec) for e in epochs]


def _source_variant_names(store, pool: list[_Candidate]) -> dict[str, str]:
    """Source label → its name in unit labels: a source study without axes names its one variant ``base``,
    which in a post-hoc study would read as the post-hoc study's own ``base:``; it is named by its study."""
    if not any(c.label == "base" and not c.axes for c in pool):
        return {}
    try:
        name = str(store.study().get("name") or "")
    except Exception:  # noqa: BLE001 - a store without a readable study row keeps the plain label
        name = ""
    return {"base": name} if name else {}


def _unit_label(unit: list[Member], names: dict[str, str] | None = None) -> str:
    """What a unit evaluates, by the source variants: ``a``, ``a × b`` (a pair), ``a + b + …`` (a group).

    ``names``: source label → the name shown (``_source_variant_names``)."""
    variants = [(names or {}).get(v, v) for v in (m.label.rsplit(" #", 1)[0] for m in unit)]
    if len({m.run for m in unit}) == 1:  # one run's snapshots, or a single run
        return variants[0]
    if len(unit) == 1:
        return variants[0]
    if len(unit) == 2:
        return f"{variants[0]} × {variants[1]}"
    return " + ".join(sorted(set(variants)))


def _stored_spec(c: _Candidate, study: str, file: str) -> RunSpec:
    """A stored run's spec as this version of ablab reads it; one error when it no longer can."""
    try:
        return RunSpec.model_validate(c.spec)
    except pydantic.ValidationError as err:
        e = _spec_error(err, file)
        raise SpecError(f"run {c.id} ('{c.label}') of {study} was stored by another version of ablab and cannot be "
                        f"read as a run of this one ({e.field}: {e.message})", file=file, field="source.study") from None


def _units(members: list[Member], kind: Any, file: str) -> tuple[list[list[Member]], list[str]]:
    """The units, and the labels of runs left out (groups that do not divide the runs)."""
    if kind == "single":
        return [[m] for m in members], []
    if kind == "pairs":
        if len(members) < 2:
            raise SpecError(f"pairs need at least 2 runs; the source has {len(members)}", file=file, field="members")
        return [[a, b] for a in members for b in members if a.run != b.run], []
    assert isinstance(kind, Groups)
    n = kind.groups
    if len(members) < n:
        raise SpecError(f"groups of {n} need at least {n} runs; the source has {len(members)}", file=file,
                        field="members.groups")
    k = len(members) // n * n
    return [members[i: i + n] for i in range(0, k, n)], [m.label for m in members[k:]]

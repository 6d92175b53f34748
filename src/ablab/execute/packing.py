"""The packing plan: which runs of a study train together, R at a time, in one process (``execute.pack``).

Runs whose resolved specs are equal but for their seeds (every stream, ``bitflip`` included, and
the replicate number) form a family; a family of runs that ``train.packed`` can pack is cut into
packs of R in study order, the rest of the study runs one run per process as before. ``auto``
packs on the CPU at 1 intra-op thread per run only, where packed training is measured bitwise equal
to the runs alone (at more threads MKL splits one small matrix product differently from a batch of
them: the last bits differ), and only models small enough that one step is dominated by per-operation overhead: R = min(32, ⌊2²⁶ /
(work × batch size)⌋), work = parameters (or a convolutional model's multiply-adds per example, which is not packed
above 2²² multiply-adds per step), no packing when R is below 2 (docs/packing.md has the numbers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union

from ablab.spec import RunSpec, Variant

AUTO_MAX = 32  # replicas per pack under ``auto``: the MLP gains little beyond (benchmarks/bench_replicas.py)
AUTO_WORK = 2 ** 26  # parameters × batch size of one packed step under ``auto``
# multiply-adds × batch size of one step of a convolutional model above which ``auto`` does not pack it: measured
# on the 2-core CPU at 1 thread (benchmarks/bench_replicas.py), one_hidden_conv on 8×8 digits at batch 32 (1.1 M)
# packs 1.9–3.6× faster, on 16×16 at batch 64 (9.2 M) 0.7–0.8× (slower), resnet6 on 8×8 at batch 64 (38 M) 1.1–1.4×
AUTO_CONV_WORK = 2 ** 22

Unit = list[Variant]  # what a worker runs at once: one run, or a pack of runs


@dataclass
class PackPlan:
    """The units to run (in study order) and, per family that runs one per process, the reason (one line each)."""

    units: list[Unit]
    notes: list[str] = field(default_factory=list)

    @property
    def packs(self) -> list[Unit]:
        return [u for u in self.units if len(u) > 1]

    def summary(self) -> str:
        """One line: how many runs train packed, in how many packs of what size."""
        packs = self.packs
        if not packs:
            return f"packing: none ({sum(map(len, self.units))} runs, one per process)"
        sizes = sorted({len(p) for p in packs}, reverse=True)
        packed = sum(map(len, packs))
        singles = len(self.units) - len(packs)
        return (f"packing: {packed} runs in {len(packs)} pack{'s' if len(packs) > 1 else ''} of "
                f"{'/'.join(map(str, sizes))} replicas"
                f"{f', {singles} runs one per process' if singles else ''}")


def family_key(spec: RunSpec) -> str:
    """A run's spec without its seeds and replicate number: runs with equal keys differ only in their seeds."""
    data = spec.model_dump(mode="json")
    data.pop("seeds", None)
    data.pop("replicate", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def auto_replicas(parameters: int, batch_size: int, device: str, threads: int, conv_macs: int = 0) -> tuple[int, str]:
    """R under ``auto``, and why when it is 1. ``conv_macs``: a convolutional model's multiply-adds per example
    (0 for a model without convolutions, whose work per example is its parameter count)."""
    if device != "cpu":
        return 1, f"auto packs on the CPU only (packing on {device} is not measured bitwise; give execute.pack: R)"
    if threads != 1:
        return 1, (f"auto packs at 1 CPU thread per run only, where packed runs equal the runs alone bitwise; "
                   f"this study runs {threads} threads per run (--threads 1, or execute.pack: R)")
    if conv_macs * batch_size > AUTO_CONV_WORK:
        return 1, (f"auto does not pack a convolutional model this large ({conv_macs:,} multiply-adds per example × "
                   f"batch {batch_size} > 2^22: one step is compute-bound, packing would be slower)")
    r = min(AUTO_MAX, AUTO_WORK // max(1, (conv_macs or parameters) * batch_size))
    if r < 2:
        return 1, (f"auto does not pack a model this large ({parameters} parameters × batch {batch_size}: one "
                   "step is compute-bound, packing would not be faster)")
    return r, ""


def plan_packs(variants: list[Variant], pack: Union[str, int], executor: str = "local", threads: int = 1,
               workers: int = 1) -> PackPlan:
    """Units for ``variants`` under ``execute.pack`` (``auto`` | ``off`` | R), each run given ``threads`` CPU threads;
    under ``auto`` a family is cut into at least ``workers`` packs, so that every worker gets a share of it."""
    from ablab.train.packed import packability

    families: dict[str, list[Variant]] = {}
    for v in variants:
        key = family_key(v.spec) if isinstance(v.spec, RunSpec) else v.id
        families.setdefault(key, []).append(v)
    if pack == "off" or pack == 1:
        return PackPlan([[v] for v in variants])
    units, refused = [], {}
    for family in families.values():
        if len(family) < 2:
            units.append(family)
            continue
        first = family[0]
        if executor != "local":
            r, why = 1, f"the {executor} executor does not pack yet"
        else:
            facts = packability(first.spec)
            if facts.refusal is not None:
                r, why = 1, facts.refusal
            elif pack == "auto":
                r, why = auto_replicas(facts.parameters, first.spec.batch_size, facts.device, threads, facts.conv_macs)
                r = max(2, min(r, -(-len(family) // max(1, workers)))) if r >= 2 else r
            else:
                r, why = int(pack), ""
        if r < 2:
            refused.setdefault(why, []).append(family)
            units.extend([v] for v in family)
        else:
            units.extend(_balanced(family, r))
    order = {v.id: i for i, v in enumerate(variants)}
    units.sort(key=lambda u: order[u[0].id])
    return PackPlan(units, [_note(why, fams) for why, fams in refused.items()])


def _balanced(family: list[Variant], r: int) -> list[Unit]:
    """The family in ⌈n / r⌉ packs of at most ``r`` runs, their sizes differing by one at most (5 by 4: 3 + 2)."""
    k = -(-len(family) // r)
    size, extra = divmod(len(family), k)
    packs, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        packs.append(family[start:end])
        start = end
    return packs


def _note(why: str, families: list[list[Variant]]) -> str:
    labels = ", ".join(f"'{f[0].label}'" for f in families[:3]) + (f" and {len(families) - 3} more" if len(families) > 3
                                                                   else "")
    return f"not packed: {sum(map(len, families))} runs (seeds of {labels}) run one per process: {why}"

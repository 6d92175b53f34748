"""Packed replicas: R runs that differ only in their seeds trained together in one process as one fused model.

Each replica is set up exactly as the run alone (``loop.set_up``: its model built under its own
``init`` seed, its bit change, its ``init_from`` restore, its optimizer); then the replicas'
parameters are stacked ([R, …]) into one packed network (``packed_layers.pack_model``: linear layers as
batched matrix products, convolutions channel-packed and grouped where bitwise, BatchNorm over R·C channels
with per-replica statistics), and one optimizer of the same kind steps the stacked tensors.
Every other draw stays the replica's own: its data order (``shuffle``), its augmentation and mixing
draws (``augment``, applied per replica) and its dropout masks (``stochastic``, a generator per
replica drawn in the order the run alone draws). Losses are computed per replica, so the gradient
reaching replica r is the one its run alone computes; ``PackedLinear``'s backward takes the same
matrix products (in the same layouts) the unpacked ``addmm`` backward takes, which makes packed
training bitwise equal to R sequential runs on the CPU (tests/train/test_packed.py, test_packed_conv.py).

At each epoch's end the packed tensors are copied back into each replica's own model and optimizer,
and the loop's own ``end_epoch`` evaluates and checkpoints that replica as the run alone would
(same evaluators, same checkpoint format, in its own ``stochastic`` stream). A replica whose loss
stops being finite is recorded ``diverged`` and leaves the group; the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.optim.groups import decoupled_decay_, group_l2_penalty
from ablab.optim.sam import asam_unscaled_params, bn_running_stats_frozen, perturbations
from ablab.registry import MODELS, OPTIMIZERS
from ablab.spec import RunSpec
from ablab.train import checkpoint as ckpt
from ablab.train.build import load_run_data, place_run_data
from ablab.train.compute import resolve_device
from ablab.train.inputs import UnitFiles
from ablab.train.packed_layers import (PackedLinear, PackedNet, Unpackable, check_model,  # noqa: F401
                                       multiply_adds, pack_model, packed_parameters, replica_part, unpack_buffers)
from ablab.train.objectives import SamStep
from ablab.train.probes import NormParams, ReluSparsity
from ablab.train.loop import Progress, Training, begin, end_epoch, finish, log_batch, set_up
from ablab.train.result import ArtifactSink, RunResult, run_guarded

PACKED_OPTIMIZERS = ("sgd", "adam", "adamw")  # elementwise updates: a stacked tensor steps as its slices do
# the models whose packed training is tested bitwise against the runs alone (tests/train/test_packed*.py)
PACKED_OBJECTIVES = ("standard", "sam")  # sam: each replica's ascent from its own gradient norm
PACKED_PROBES = ("norm_params", "relu_sparsity")
PACKED_MODELS = ("linear", "mlp", "one_hidden_conv", "3c3d", "resnet6", "resnet10", "resnet14")


# ---------------------------------------------------------------- what packs


@dataclass
class Packability:
    """What the executor's plan needs of a run: why it cannot be packed (None: it can), its size and device."""

    refusal: Optional[str]
    parameters: int = 0
    device: str = "cpu"
    conv_macs: int = 0  # multiply-adds per example of a convolutional model's forward pass; 0 without convolutions


def packability(spec: RunSpec) -> Packability:
    """Whether ``spec`` can be packed with other seeds of itself (its model built on the meta device)."""
    if spec.objective["name"] not in PACKED_OBJECTIVES:
        return Packability(f"objective '{spec.objective['name']}' is not packed (packs: {', '.join(PACKED_OBJECTIVES)})")
    if spec.optimizer["name"] not in PACKED_OPTIMIZERS:
        return Packability(f"optimizer '{spec.optimizer['name']}' is not packed (packs: {', '.join(PACKED_OPTIMIZERS)})")
    probes = [p if isinstance(p, str) else p["name"] for p in spec.record.probes]
    if any(p not in PACKED_PROBES for p in probes):
        return Packability(f"probe '{next(p for p in probes if p not in PACKED_PROBES)}' is not packed "
                           f"(packs: {', '.join(PACKED_PROBES)})")
    c = spec.compute
    if c.precision != "fp32" or c.compile or c.channels_last:
        return Packability("compute options (precision, compile, channels_last) are not packed")
    try:
        device = resolve_device(spec.device)
        data = load_run_data(spec)
        if spec.model["name"] not in PACKED_MODELS:
            raise Unpackable(f"model '{spec.model['name']}' is not packed (packs: {', '.join(PACKED_MODELS)})")
        with torch.device("meta"):
            model = MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)
        check_model(model, device)
        macs, convolutional = multiply_adds(model, tuple(data.in_shape))
    except Unpackable as err:
        return Packability(str(err))
    except Exception as err:  # noqa: BLE001  (the run alone reports the problem with its field)
        return Packability(f"the run cannot be built: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    return Packability(None, sum(p.numel() for p in model.parameters()), device.type, macs if convolutional else 0)


def refusal(spec: RunSpec) -> Optional[str]:
    """Why ``spec`` cannot be packed with other seeds of itself, or None when it can."""
    return packability(spec).refusal


# ---------------------------------------------------------------- the packed optimizer


@dataclass
class PackedOptimization:
    """One optimizer over the stacked parameters, its groups mirroring each replica's, and where decay acts."""

    optimizer: torch.optim.Optimizer
    penalty: Optional[Callable[[], torch.Tensor]]
    decouple: Optional[Callable[[], None]]
    params: list[nn.Parameter]


def pack_optimizer(spec: RunSpec, replicas: list[Training], params: list[nn.Parameter]) -> PackedOptimization:
    """The replicas' optimizer over the packed parameters, each replica's state (a continued run's) stacked in."""
    first = replicas[0].run
    index = {id(p): i for i, p in enumerate(first.model.parameters())}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[index[id(p)]] for p in g["params"]]}
              for g in first.optimizer.param_groups]
    optimizer = OPTIMIZERS.create(spec.optimizer, params=groups)  # each group's own settings (the run's) are kept
    _stack_state(optimizer, [list(t.run.model.parameters()) for t in replicas], [t.run.optimizer for t in replicas], params)
    og = optimizer.param_groups
    wd = spec.weight_decay
    penalty = (lambda: group_l2_penalty(og)) if wd.value > 0 and wd.mode == "l2" else None
    decouple = (lambda: decoupled_decay_(og)) if wd.value > 0 and wd.mode == "decoupled" else None
    return PackedOptimization(optimizer, penalty, decouple, params)


def _stack_state(packed: torch.optim.Optimizer, replica_params: list[list[nn.Parameter]],
                 optimizers: list[torch.optim.Optimizer], params: list[nn.Parameter]) -> None:
    """Each replica's optimizer state (restored by ``init_from``) stacked into the packed optimizer's."""
    for i, p in enumerate(params):
        states = [opt.state.get(ps[i], {}) for opt, ps in zip(optimizers, replica_params)]
        if states[0]:
            packed.state[p] = {k: _stacked(k, [s[k] for s in states]) for k in states[0]}


def _per_element(key: str, value) -> bool:
    """A state entry with one value per parameter element (momentum, moments); ``step`` is one count for all."""
    return key != "step" and isinstance(value, torch.Tensor) and value.dim() > 0


def _stacked(key: str, values: list):
    first = values[0]
    if _per_element(key, first):
        return torch.stack(values)
    return first.clone() if isinstance(first, torch.Tensor) else first


def _slice(key: str, value, r: int):
    if _per_element(key, value):
        return value[r].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def unpack_parameters(packed: PackedOptimization, r: int, t: Training) -> None:
    """Replica ``r``'s slices of the packed parameters copied into its own model."""
    with torch.no_grad():
        for p, q in zip(packed.params, t.run.model.parameters()):
            q.copy_(p[r])


def unpack_into(packed: PackedOptimization, net: PackedNet, r: int, t: Training) -> None:
    """Replica ``r``'s slices of the packed parameters, buffers (norm statistics) and optimizer state copied into
    its own model and optimizer."""
    own = list(t.run.model.parameters())
    unpack_parameters(packed, r, t)
    unpack_buffers(net, r, t.run.model)
    for mine, group in zip(t.run.optimizer.param_groups, packed.optimizer.param_groups):
        mine.update({k: v for k, v in group.items() if k != "params"})  # the lr the schedule set last
    position = {id(q): i for i, q in enumerate(own)}
    for group in t.run.optimizer.param_groups:  # in the optimizer's order: its state_dict keeps insertion order
        for q in group["params"]:
            state = packed.optimizer.state.get(packed.params[position[id(q)]])
            if state:
                t.run.optimizer.state[q] = {k: _slice(k, v, r) for k, v in state.items()}


# ---------------------------------------------------------------- each replica's stochastic stream


class ReplicaStream:
    """A replica's ``stochastic`` stream outside the loop's scope: a CPU generator (its dropout draws) and, on
    CUDA, the CUDA generator's state; ``scope()`` makes them the global generators (evaluation, checkpoints)."""

    def __init__(self, t: Training):
        with t.state.stochastic_stream():  # seeded as the run alone seeds it, a continued run's state restored
            state = ckpt.stochastic_state(t.run.device)
        self.device = t.run.device
        self.cpu = torch.Generator().set_state(state["cpu"])
        self.cuda = state.get("cuda")

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            ckpt.set_stochastic_state({"cpu": self.cpu.get_state(), **({"cuda": self.cuda} if self.cuda is not None
                                                                      else {})}, self.device)
            yield
            state = ckpt.stochastic_state(self.device)
            self.cpu.set_state(state["cpu"])
            self.cuda = state.get("cuda")


# ---------------------------------------------------------------- training a pack


@dataclass
class Replica:
    """One run of the pack: its unpacked training (parts, state, records), its stream, its status."""

    index: int
    run_id: str
    t: Training
    stream: ReplicaStream
    started: float
    status: str = "done"
    slot: int = 0  # its place in the packed tensors (replicas whose set-up failed take none)

    @property
    def alive(self) -> bool:
        return self.status == "done"


@dataclass
class Pack:
    """The replicas still training and what trains them together."""

    replicas: list[Replica]
    net: PackedNet
    opt: PackedOptimization
    sam: Optional[dict] = None  # the objective's settings when it is ``sam``

    @property
    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]


def train_pack(specs: list[RunSpec], run_ids: Optional[list[str]] = None, staging: Optional[list[Optional[Path]]] = None,
               files: Optional[list[Optional[UnitFiles]]] = None, progress: Optional[list[Progress]] = None
               ) -> list[RunResult]:
    """Train the runs ``specs`` (equal but for their seeds) packed; one result per run, as each alone would give.

    A replica whose set-up fails is ``failed`` alone; an error in the packed loop fails every replica."""
    n = len(specs)
    run_ids = run_ids or [s.id for s in specs]
    staging, files = staging or [None] * n, files or [None] * n
    progress = progress or [lambda e, k: None] * n
    results: dict[int, RunResult] = {}
    replicas = []
    shared: list = []  # the family's one dataset on the device, read-only, loaded by the first set-up
    for i, spec in enumerate(specs):
        got: list[Replica] = []
        work = functools.partial(_set_up_replica, i, spec, run_ids[i], staging[i], files[i], got, shared)
        result = run_guarded(run_ids[i], spec.device, work)
        if got:
            replicas.append(got[0])
        else:
            results[i] = result
    if replicas:
        trained = run_guarded(run_ids[replicas[0].index], specs[0].device,
                              functools.partial(_train_replicas, replicas, progress))
        for r in replicas:
            results[r.index] = trained.info["results"][r.index] if trained.status != "failed" else RunResult(
                r.run_id, "failed", error=trained.error, device=trained.device, duration_s=trained.duration_s,
                started=trained.started)
    return [results[i] for i in range(n)]


def _set_up_replica(i: int, spec: RunSpec, run_id: str, staging: Optional[Path], files: Optional[UnitFiles],
                    out: list, shared: list, started: float) -> RunResult:
    """Replica ``i`` set up as the run alone, on the pack's shared dataset (placed by the first replica)."""
    if not shared:
        shared.append(place_run_data(spec))
    t = set_up(spec, files or UnitFiles(), ArtifactSink(staging), data=shared[0])
    out.append(Replica(i, run_id, t, ReplicaStream(t), started))
    return RunResult(run_id, "done")


def _train_replicas(replicas: list[Replica], progress: list[Progress], started: float) -> RunResult:
    """The packed loop; its results travel in the returned result's ``info`` (``run_guarded`` fails them all)."""
    pack = _assemble(replicas)
    spec, run = replicas[0].t.run.spec, replicas[0].t.run
    with seeding.deterministic_kernels(spec.deterministic):
        for r in replicas:
            r.t.run.model.train()
            with r.stream.scope():
                begin(r.t)
            progress[r.index](r.t.state.epoch, run.duration.epochs)  # the total, known now (as the loop reports it)
        for epoch in range(replicas[0].t.state.epoch + 1, run.duration.epochs + 1):
            if not pack.alive:
                break
            _packed_epoch(pack, epoch)
            _end_packed_epoch(pack)
            for r in pack.alive:
                progress[r.index](epoch, run.duration.epochs)
    results = {}
    for r in replicas:
        r.t.info["packed"] = {"replicas": len(replicas), "index": r.index}
        results[r.index] = finish(r.t, r.status, r.run_id, r.started)
    return RunResult(replicas[0].run_id, "done", info={"results": results})


def _assemble(replicas: list[Replica]) -> Pack:
    for slot, r in enumerate(replicas):
        r.slot = slot
    first = replicas[0].t.run
    net = pack_model([r.t.run.model for r in replicas], [r.stream.cpu for r in replicas], first.device)
    opt = pack_optimizer(first.spec, [r.t for r in replicas], packed_parameters(net, first.model))
    return Pack(replicas, net.train(), opt, _sam_settings(first.spec, net))


def _sam_settings(spec: RunSpec, net: PackedNet) -> Optional[dict]:
    """``sam``'s ρ, adaptive, η and the packed parameters ASAM leaves unscaled (by the replicas' names)."""
    if spec.objective["name"] != "sam":
        return None
    defaults = {k: v.default for k, v in inspect.signature(SamStep.__init__).parameters.items()
                if v.default is not inspect.Parameter.empty}
    o = {**defaults, **{k: v for k, v in spec.objective.items() if k != "name"}}
    unscaled = asam_unscaled_params(net.body, o["adaptive_params"]) if o["adaptive"] else []
    return {"rho": o["rho"], "adaptive": o["adaptive"], "eta": o["eta"], "unscaled": {id(p) for p in unscaled}}


def _packed_epoch(pack: Pack, epoch: int) -> None:
    """One epoch of packed steps: each replica's batches in its own order; a non-finite logged loss ends that replica."""
    first = pack.replicas[0].t
    run, spec = first.run, first.run.spec
    splits = [r.t.run.data.splits["train"] for r in pack.replicas]
    for r in pack.replicas:
        r.t.state.epoch = epoch
    orders = [r.t.run.sampler.epoch(len(split), spec.batch_size, spec.drop_last, r.t.state.shuffle, run.device)
              for r, split in zip(pack.replicas, splits)]
    total, every = run.duration.total_steps, spec.record.every_steps
    for idxs in zip(*orders):
        outs, ys = _packed_step(pack, *_batch(pack, splits, idxs))
        step = first.state.step
        if step % every == 0 or step == total:
            for r in pack.alive:
                if not log_batch(r.t, outs[r.slot], ys[r.slot]):
                    r.status = "diverged"
        if step >= total:
            break


def _batch(pack: Pack, splits: list, idxs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The replicas' batches stacked [R, B, …], each in its own order and augmented from its own stream; without
    augmentations one gather from the dataset they share."""
    if not pack.replicas[0].t.run.augments:
        x, y = splits[0].rows(torch.stack(idxs))
        return x, list(y.unbind(0))
    xs, ys = [], []
    for r, split, idx in zip(pack.replicas, splits, idxs):
        x, y = split.rows(idx)
        for aug in r.t.run.augments:
            x, y = aug(x, y, r.t.state.augment)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), ys


def _packed_step(pack: Pack, x: torch.Tensor, ys: list[torch.Tensor]) -> tuple[list, list]:
    """One optimizer step of every replica: its loss on its own batch, one packed update."""
    run = pack.replicas[0].t.run
    factor = run.schedule(pack.replicas[0].t.state.step)
    for group, lr in zip(pack.opt.optimizer.param_groups, run.base_lrs):
        group["lr"] = lr * factor
    for r in pack.replicas:
        for probe in r.t.run.probes:
            probe.before_step(r.t.state.step)
    with _relu_counts(pack):
        outs = pack.net(x).unbind(0)
    losses = [r.t.run.loss_fn(out, y) for r, out, y in zip(pack.replicas, outs, ys)]
    pack.opt.optimizer.zero_grad(set_to_none=True)
    _total(pack, losses).backward()
    if pack.sam is not None:
        _sam_second_pass(pack, x, ys)
    if pack.opt.decouple is not None:
        pack.opt.decouple()
    pack.opt.optimizer.step()
    for r, loss in zip(pack.replicas, losses):
        if r.alive:
            r.t.state.running.add(loss)
        r.t.state.step += 1
    _probes_after_step(pack)
    return [o.detach() for o in outs], ys


def _total(pack: Pack, losses: list[torch.Tensor]) -> torch.Tensor:
    """What is differentiated: the replicas' losses summed (each replica's gradient is its own), plus the L2 penalty."""
    total = torch.stack(losses).sum()
    return total + pack.opt.penalty() if pack.opt.penalty is not None else total


def _sam_second_pass(pack: Pack, x: torch.Tensor, ys: list[torch.Tensor]) -> None:
    """SAM's ascent per replica (``SAM.first_step``'s own computation on each replica's slices: its own global
    gradient norm), the gradient at w + e with the norm statistics frozen, then back to the clean weights."""
    params = [p for g in pack.opt.optimizer.param_groups for p in g["params"] if p.grad is not None]
    sam = pack.sam
    settings = [(sam["rho"], sam["adaptive"] and id(p) not in sam["unscaled"], sam["eta"]) for p in params]
    with torch.no_grad():
        clean = [p.detach().clone() for p in params]
        for r in range(len(pack.replicas)):
            for p, e in zip(params, perturbations([p[r] for p in params], [p.grad[r] for p in params], settings)):
                p[r].add_(e)
    pack.opt.optimizer.zero_grad(set_to_none=True)
    with bn_running_stats_frozen(pack.net):
        outs = pack.net(x).unbind(0)
        _total(pack, [r.t.run.loss_fn(out, y) for r, out, y in zip(pack.replicas, outs, ys)]).backward()
    with torch.no_grad():
        for p, c in zip(params, clean):
            p.copy_(c)


@contextlib.contextmanager
def _relu_counts(pack: Pack) -> Iterator[None]:
    """While the clean forward pass runs: each replica's ``relu_sparsity`` probe due now gets the counts of its
    own slice of every packed ReLU's output (what its hook would count on the model alone)."""
    due = [(r, p) for r in pack.replicas for p in r.t.run.probes if isinstance(p, ReluSparsity) and p.handles]
    if not due:
        yield
        return
    handles = [m.register_forward_hook(functools.partial(_count_relu, name, due, len(pack.replicas)))
               for name, m in pack.net.body.named_modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _count_relu(name: str, due: list, replicas: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
    for r, probe in due:
        if module.training and name in probe.names and name not in probe.current:
            mine = replica_part(output, r.slot, replicas, module.channel_packed)
            probe.current[name] = (torch.stack([mine.numel() - torch.count_nonzero(mine), torch.isnan(mine).sum()]),
                                   mine.numel())


def _probes_after_step(pack: Pack) -> None:
    """Each replica's probes after the step; a ``norm_params`` record due now reads the replica's own model,
    brought up to date with its slices of the packed parameters first."""
    for r in pack.replicas:
        step, epoch = r.t.state.step, r.t.state.epoch
        if any(isinstance(p, NormParams) and step % p.every == 0 for p in r.t.run.probes):
            unpack_parameters(pack.opt, r.slot, r.t)
        for probe in r.t.run.probes:
            probe.after_step(step, epoch)


def _end_packed_epoch(pack: Pack) -> None:
    """Each live replica's own model and optimizer brought up to date, then evaluated and checkpointed as alone."""
    for r in pack.alive:
        unpack_into(pack.opt, pack.net, r.slot, r.t)
        with r.stream.scope():
            if not end_epoch(r.t):
                r.status = "diverged"


# ---------------------------------------------------------------- the cost of a packed step (validation)


def packed_step_seconds(specs: list[RunSpec], threads: Optional[int] = None, min_steps: int = 10,
                        min_seconds: float = 0.3) -> float:
    """Seconds per packed step of the runs ``specs`` (fresh replicas on their first batch, after 3 warm-up steps,
    ``threads`` intra-op CPU threads): what ``ablab validate``'s packed cost multiplies."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        specs = [s.model_copy(update={"init_from": None}) for s in specs]  # the step costs the same continued
        shared = place_run_data(specs[0])
        replicas = []
        for i, spec in enumerate(specs):
            t = set_up(spec, UnitFiles(), ArtifactSink(None), data=shared)
            replicas.append(Replica(i, spec.id, t, ReplicaStream(t), 0.0))
        pack = _assemble(replicas)
        split = shared.splits["train"]
        index = torch.arange(min(specs[0].batch_size, len(split)), device=replicas[0].t.run.device)
        x, ys = _batch(pack, [split] * len(replicas), tuple(index for _ in replicas))
        for _ in range(3):
            _packed_step(pack, x, ys)
        _sync(replicas[0].t.run.device)
        start, n = time.perf_counter(), 0
        while n < min_steps or time.perf_counter() - start < min_seconds:
            _packed_step(pack, x, ys)
            n += 1
        _sync(replicas[0].t.run.device)
        return (time.perf_counter() - start) / n
    finally:
        torch.set_num_threads(previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

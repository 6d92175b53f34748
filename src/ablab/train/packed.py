"""Packed replicas: R runs that differ only in their seeds trained together in one process as one fused model.

Each replica is set up exactly as the run alone (``loop.set_up``: its model built under its own
``init`` seed, its bit change, its ``init_from`` restore, its optimizer); then the replicas'
parameters are stacked ([R, out, in]) into one packed network whose linear layers are batched
matrix products (``PackedLinear``), and one optimizer of the same kind steps the stacked tensors.
Every other draw stays the replica's own: its data order (``shuffle``), its augmentation and mixing
draws (``augment``, applied per replica) and its dropout masks (``stochastic``, a generator per
replica drawn in the order the run alone draws). Losses are computed per replica, so the gradient
reaching replica r is the one its run alone computes; ``PackedLinear``'s backward takes the same
matrix products (in the same layouts) the unpacked ``addmm`` backward takes, which makes packed
training bitwise equal to R sequential runs on the CPU (tests/train/test_packed.py).

At each epoch's end the packed tensors are copied back into each replica's own model and optimizer,
and the loop's own ``_end_epoch`` evaluates and checkpoints that replica as the run alone would
(same evaluators, same checkpoint format, in its own ``stochastic`` stream). A replica whose loss
stops being finite is recorded ``diverged`` and leaves the group; the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.optim.groups import decoupled_decay_, group_l2_penalty
from ablab.registry import MODELS, OPTIMIZERS
from ablab.spec import RunSpec
from ablab.train import checkpoint as ckpt
from ablab.train.build import load_run_data
from ablab.train.compute import resolve_device
from ablab.train.inputs import UnitFiles
from ablab.train.loop import Progress, Training, _begin, _end_epoch, _finish, _log_batch, set_up
from ablab.train.result import ArtifactSink, RunResult, run_guarded

PACKED_OPTIMIZERS = ("sgd", "adam", "adamw")  # elementwise updates: a stacked tensor steps as its slices do
EXACT_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Identity)  # the same bits on any slice of a batch
SLICED_ACTIVATIONS = (nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU)  # vectorised kernels differ at a tensor's tail


class Unpackable(Exception):
    """Why a run cannot be packed (one line)."""


# ---------------------------------------------------------------- what packs


@dataclass
class Packability:
    """What the executor's plan needs of a run: why it cannot be packed (None: it can), its size and device."""

    refusal: Optional[str]
    parameters: int = 0
    device: str = "cpu"


def packability(spec: RunSpec) -> Packability:
    """Whether ``spec`` can be packed with other seeds of itself (its model built on the meta device)."""
    if spec.objective["name"] != "standard":
        return Packability(f"objective '{spec.objective['name']}' is not packed yet (packs: standard)")
    if spec.optimizer["name"] not in PACKED_OPTIMIZERS:
        return Packability(f"optimizer '{spec.optimizer['name']}' is not packed (packs: {', '.join(PACKED_OPTIMIZERS)})")
    if spec.record.probes:
        return Packability("probes are not packed yet")
    c = spec.compute
    if c.precision != "fp32" or c.compile or c.channels_last:
        return Packability("compute options (precision, compile, channels_last) are not packed")
    try:
        device = resolve_device(spec.device)
        data = load_run_data(spec)
        with torch.device("meta"):
            model = MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)
        for module in _layers(model, spec.model["name"]):
            _check_layer(module, device)
    except Unpackable as err:
        return Packability(str(err))
    except Exception as err:  # noqa: BLE001  (the run alone reports the problem with its field)
        return Packability(f"the run cannot be built: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    return Packability(None, sum(p.numel() for p in model.parameters()), device.type)


def refusal(spec: RunSpec) -> Optional[str]:
    """Why ``spec`` cannot be packed with other seeds of itself, or None when it can."""
    return packability(spec).refusal


def _layers(model: nn.Module, name: str) -> list[nn.Module]:
    if type(model) is not nn.Sequential:
        raise Unpackable(f"model '{name}' is not packed yet (packs: linear, mlp)")
    return list(model.children())


def _check_layer(m: nn.Module, device: torch.device) -> None:
    """A layer the packed network can stand in for, or ``Unpackable`` saying why not."""
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise Unpackable("a Flatten over other dimensions than all but the batch is not packed")
    elif isinstance(m, nn.Linear):
        if m.bias is None:
            raise Unpackable("a linear layer without bias (a norm layer follows it) is not packed yet")
    elif isinstance(m, nn.Dropout):
        if device.type != "cpu":
            raise Unpackable("dropout is packed on the CPU only (CUDA draws its masks in a fused kernel)")
    elif not isinstance(m, EXACT_ACTIVATIONS + SLICED_ACTIVATIONS):
        raise Unpackable(f"layer {type(m).__name__} is not packed yet (norm layers, convolutions: not yet)")


# ---------------------------------------------------------------- the packed network


class PackedLinear(torch.autograd.Function):
    """y_r = x_r W_rᵀ + b_r for every replica r, with the gradients the unpacked ``addmm`` computes.

    Autograd's own ``bmm`` backward takes W's gradient as (xᵀ g)ᵀ; ``addmm`` (an ``nn.Linear``) takes
    it as gᵀ x, which MKL rounds differently for small shapes; this backward takes gᵀ x per replica.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


class _Linear(nn.Module):
    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PackedLinear.apply(x, self.weight, self.bias)


class _Sliced(nn.Module):
    """A layer applied to each replica's slice on its own (the bits of the unpacked call)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.module(xr) for xr in x.unbind(0)])


class _Dropout(nn.Module):
    """Inverted dropout per replica, each mask from that replica's ``stochastic`` generator (PyTorch's CPU
    ``dropout``: noise = bernoulli(1 − p) / (1 − p), output = x · noise)."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        out = []
        for xr, g in zip(x.unbind(0), self.generators):
            noise = torch.empty_like(xr).bernoulli_(1 - self.p, generator=g)
            out.append(xr * noise.div_(1 - self.p))
        return torch.stack(out)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


def pack_model(models: list[nn.Module], generators: list[torch.Generator]) -> nn.Sequential:
    """The packed network of the replicas' (identically built) ``nn.Sequential`` models: input [R, B, …]."""
    layers = []
    for column in zip(*(list(m.children()) for m in models)):
        first = column[0]
        if isinstance(first, nn.Flatten):
            layers.append(_Flatten())
        elif isinstance(first, nn.Linear):
            layers.append(_Linear(list(column)))
        elif isinstance(first, nn.Dropout):
            layers.append(_Dropout(first.p, generators))
        elif isinstance(first, EXACT_ACTIVATIONS):
            layers.append(first)
        else:
            layers.append(_Sliced(first))
    return nn.Sequential(*layers)


def _packed_params(model: nn.Sequential) -> list[nn.Parameter]:
    """The packed parameters in the replicas' parameter order (weight, bias per linear layer)."""
    return [p for m in model if isinstance(m, _Linear) for p in (m.weight, m.bias)]


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


def unpack_into(packed: PackedOptimization, r: int, t: Training) -> None:
    """Replica ``r``'s slices of the packed parameters and optimizer state copied into its own model and optimizer."""
    own = list(t.run.model.parameters())
    with torch.no_grad():
        for p, q in zip(packed.params, own):
            q.copy_(p[r])
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

    @property
    def alive(self) -> bool:
        return self.status == "done"


@dataclass
class Pack:
    """The replicas still training and what trains them together."""

    replicas: list[Replica]
    net: nn.Sequential
    opt: PackedOptimization

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
    for i, spec in enumerate(specs):
        got: list[Replica] = []
        work = functools.partial(_set_up_replica, i, spec, run_ids[i], staging[i], files[i], got)
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
                    out: list, started: float) -> RunResult:
    t = set_up(spec, files or UnitFiles(), ArtifactSink(staging))
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
                _begin(r.t)
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
        results[r.index] = _finish(r.t, r.status, r.run_id, r.started)
    return RunResult(replicas[0].run_id, "done", info={"results": results})


def _assemble(replicas: list[Replica]) -> Pack:
    net = pack_model([r.t.run.model for r in replicas], [r.stream.cpu for r in replicas])
    opt = pack_optimizer(replicas[0].t.run.spec, [r.t for r in replicas], _packed_params(net))
    return Pack(replicas, net.train(), opt)


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
                if not _log_batch(r.t, outs[r.index], ys[r.index]):
                    r.status = "diverged"
        if step >= total:
            break


def _batch(pack: Pack, splits: list, idxs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The replicas' batches stacked [R, B, …], each in its own order and augmented from its own stream; without
    augmentations one gather (the replicas' data are the same: their specs differ only in seeds)."""
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
    outs = pack.net(x).unbind(0)
    losses = [r.t.run.loss_fn(out, y) for r, out, y in zip(pack.replicas, outs, ys)]
    total = torch.stack(losses).sum()
    if pack.opt.penalty is not None:
        total = total + pack.opt.penalty()
    pack.opt.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if pack.opt.decouple is not None:
        pack.opt.decouple()
    pack.opt.optimizer.step()
    for r, loss in zip(pack.replicas, losses):
        if r.alive:
            r.t.state.running.add(loss)
        r.t.state.step += 1
    return [o.detach() for o in outs], ys


def _end_packed_epoch(pack: Pack) -> None:
    """Each live replica's own model and optimizer brought up to date, then evaluated and checkpointed as alone."""
    for r in pack.alive:
        unpack_into(pack.opt, r.index, r.t)
        with r.stream.scope():
            if not _end_epoch(r.t):
                r.status = "diverged"

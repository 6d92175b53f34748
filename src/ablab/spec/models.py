"""The spec models: a ``Study`` (what the researcher writes) and the runs it expands to.

A training run is a ``RunSpec``; a post-hoc unit (stored runs evaluated without training) is an
``EvalSpec``. Both are plain data: anything that changes a run's numbers is in them, and their id
is the hash of their canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, TypeAdapter,
                      PrivateAttr, ValidationError, ValidationInfo, create_model, field_validator,
                      model_serializer, model_validator)

from ablab.errors import SpecError
from ablab.plugins import check_module_name, code_of, import_modules, load_entry_points
from ablab.optim.groups import Rule, RunMode, check_multipliers
from ablab.registry import (AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, OBJECTIVES, OPTIMIZERS, PROBES,
                            SAMPLERS, SCHEDULES, Registry)
from ablab.seeding import RANDOM_SOURCES, SOURCES
from ablab.version import PROTOCOL_VERSION

load_entry_points()  # installed plug-ins, before any spec names their components

SeedSource = Literal[SOURCES]  # the one declaration of the sources is ablab.seeding (STREAMS + kernels)
Component = Union[str, dict[str, Any]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _component(registry: Registry, value: Component) -> dict[str, Any]:
    try:
        return registry.validate(value)
    except SpecError as err:
        raise ValueError(err.render()) from None


def _components(registry: Registry, values: list[Component]) -> list[dict[str, Any]]:
    """A list of components; an error names the item's index."""
    out = []
    for i, value in enumerate(values):
        try:
            out.append(registry.validate(value))
        except SpecError as err:
            raise ValueError(err.located(prefix=str(i)).render()) from None
    return out


ModuleName = Annotated[str, AfterValidator(check_module_name)]
"""A dotted module name listed under ``imports`` (never code, never ``module:attribute``)."""


class _OwnCode(_Strict):
    """What a unit needs of the researcher's own code: modules to import and the source it ran.

    ``imports`` are imported before the unit is validated (in the driver and in every worker);
    ``code`` maps each outside top-level package the unit uses to a hash of its source, filled in
    when the unit is built, so an edit of that code changes the unit's id. Both are left out of the
    canonical form when empty: a run of built-in components keeps the id it had before they existed.
    """

    imports: list[ModuleName] = []
    code: dict[str, str] = {}
    # the id, worked out once: a validated unit is not changed in place (a changed copy is a new object,
    # ``model_copy`` forgets it); validating a 2,100-run study asked each run for its id 8 times
    _id: Optional[str] = PrivateAttr(default=None)

    def model_copy(self, *args: Any, **kwargs: Any) -> "_OwnCode":
        copy = super().model_copy(*args, **kwargs)
        copy._id = None
        return copy

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name != "_id":
            super().__setattr__("_id", None)

    @model_validator(mode="before")
    @classmethod
    def _import_first(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("imports"), list):
            try:
                import_modules(data["imports"])
            except SpecError as err:
                raise ValueError(err.render()) from None
        return data

    @model_validator(mode="after")
    def _fill_code(self) -> "_OwnCode":
        if "code" not in self.model_fields_set:
            self.code = code_of(self.model_dump(mode="json"), self.imports)
        return self

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in ("imports", "code"):
            if not data.get(key):
                data.pop(key, None)
        return data


_REGISTRY_OF = {"data": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES,
                "objective": OBJECTIVES, "sampler": SAMPLERS}


class _SeedsBase(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _kernels_has_no_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kernels" in data:
            raise ValueError("'kernels' has no seed, only a switch: the run's 'deterministic: true | false' "
                             "(or seeds: {vary: [kernels]} for replicates with nondeterministic kernels)")
        return data


Seeds = create_model(
    "Seeds", __base__=_SeedsBase,
    __doc__="One integer per random stream (see ``ablab.seeding``); ``bitflip: null`` (default) changes no weight.",
    **{stream: (int, 0) for stream in RANDOM_SOURCES}, bitflip=(Optional[int], None),
)


def _evaluator_list(values: list[Component]) -> list[dict[str, Any]]:
    if not values:
        raise ValueError("give at least one evaluator (default: [standard])")
    return _components(EVALUATORS, values)


Evaluators = Annotated[list[Component], AfterValidator(_evaluator_list)]
"""``record.evaluators`` of a run, ``base.evaluators`` of a post-hoc study: at least one, each validated."""


class Checkpoints(_Strict):
    """When a run saves its full training state: at ``epochs``, every ``every_epochs``, and/or at the end.

    A checkpoint holds the model, the optimizer, the step and epoch and the state of every random
    stream, so a run continued from it (``init_from``) is bitwise the run that never stopped (CPU).
    """

    epochs: list[NonNegativeInt] = []
    every_epochs: Optional[PositiveInt] = None
    final: bool = False
    snapshots: bool = False  # at the end of each cycle of a cyclic schedule (snapshot ensembles)

    @model_serializer(mode="wrap")
    def _omit_snapshots_off(self, handler):
        # absent when off: runs stored before the field existed keep their ids
        data = handler(self)
        if not self.snapshots:
            data.pop("snapshots", None)
        return data

    def due(self, epoch: int, last_epoch: int, cycle_ends: Sequence[int] = ()) -> bool:
        """Is a checkpoint saved after ``epoch`` (0: before the first step)? ``cycle_ends``: the
        schedule's cycle-end epochs, saved when ``snapshots`` is on."""
        return (epoch in self.epochs or (self.every_epochs is not None and epoch > 0 and epoch % self.every_epochs == 0)
                or (self.final and epoch == last_epoch) or (self.snapshots and epoch in cycle_ends))

    def count(self, last_epoch: int, cycle_ends: Sequence[int] = ()) -> int:
        """How many of the epochs 0..``last_epoch`` save a checkpoint, counted without walking them."""
        if last_epoch < 0:
            return 0
        named = set(self.epochs) | ({last_epoch} if self.final else set())
        named |= set(cycle_ends) if self.snapshots else set()
        every = self.every_epochs
        periodic = last_epoch // every if every is not None else 0
        return periodic + sum(1 for e in named if 0 <= e <= last_epoch and not (every and e > 0 and e % every == 0))


class Record(_Strict):
    """What a run records: training metrics every ``every_steps`` steps, evaluators per epoch, checkpoints.

    ``evaluators`` run on the ``eval_splits`` (unless an evaluator names its own) at the epochs each
    asks for; the default measures loss and accuracy (MSE for regression) every ``eval_every_epochs``.
    """

    every_steps: PositiveInt = 50
    eval_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    eval_every_epochs: PositiveInt = 1
    eval_batch_size: PositiveInt = 1024
    evaluators: Evaluators = ["standard"]
    checkpoints: Checkpoints = Checkpoints()
    probes: list[Component] = []

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "sharpness" in data:
                raise ValueError("'record.sharpness' is now an evaluator: record: {evaluators: [standard, "
                                 "{name: sharpness, rho: 0.05, batches: 8, hessian_iters: 20}]}")
            if "checkpoint" in data:
                raise ValueError("'record.checkpoint' is now 'record.checkpoints: {final: true}' "
                                 "(or {epochs: [...]}, {every_epochs: k})")
        return data

    @field_validator("probes")
    @classmethod
    def _probes(cls, v: list[Component]) -> list[dict[str, Any]]:
        return _components(PROBES, v)



class WeightDecay(_Strict):
    """Weight decay named explicitly: where λ acts (``mode``) and on which parameters (``params``).

    ``l2``: 0.5·λ·Σ‖w − c‖² added to the loss (coupled; DeepOBS's L2). ``decoupled``:
    w ← w − lr·λ·(w − c) outside the optimizer, before its step (SGDW/AdamW). ``params``:
    ``all``, ``exclude_bias_norm`` (weights only), ``gamma_to_one`` (all, norm γ toward c = 1).
    This is separate from an optimizer's own ``weight_decay`` parameter; use one or the other.
    """

    value: float = Field(0.0, ge=0.0)
    mode: RunMode = "l2"
    params: Rule = "exclude_bias_norm"


class Corrupt(_Strict):
    """Randomisation tests (Zhang et al. 2017): random training labels, shuffled pixels.

    ``label_fraction`` of the training labels are replaced by uniformly drawn classes and
    ``shuffle_pixels`` applies one fixed pixel permutation to every image of every split; both
    are drawn from ``seed``, a property of the study, not of the run's random streams.
    """

    label_fraction: float = Field(0.0, ge=0.0, le=1.0)
    shuffle_pixels: bool = False
    seed: int = 0


class Compute(_Strict):
    """How the arithmetic runs (these can change the last bits, so they are part of the run).

    ``precision: bf16`` autocasts convolutions and matmuls to bfloat16 under PyTorch's own autocast
    policy: norm layers keep float32 parameters, statistics and arithmetic (BatchNorm's output is
    rounded to bfloat16), and the model output and the loss are float32; ``channels_last`` stores image activations NHWC (faster convolutions on
    GPUs); ``compile`` wraps the model in ``torch.compile`` (compiled code is cached and reused by
    later runs of the same architecture in one worker process).
    """

    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False


class InitFrom(_Strict):
    """Start from a stored checkpoint: run ``run`` of the study in ``study`` (None: this study) at ``epoch``.

    Resolved during expansion from what the spec wrote (a run id, an axis selector or a selection);
    ``study`` is where the source lives and is not part of the run's id (moving results keeps ids).
    """

    run: str = Field(pattern=r"^[0-9a-f]{16}$")
    epoch: NonNegativeInt
    study: Optional[str] = None


class RunSpec(_OwnCode):
    """Everything that changes a run's numbers; two runs with the same id are the same experiment."""

    data: Component
    model: Component
    optimizer: Component
    lr_scale: float = Field(1.0, gt=0.0, description="multiplies the optimizer's lr (order-of-magnitude tests)")
    schedule: Component = "constant"
    loss: Component = "cross_entropy"
    augment: list[Component] = []
    epochs: Optional[PositiveInt] = None
    steps: Optional[PositiveInt] = None
    budget_epochs: Optional[PositiveInt] = Field(
        None, description="compute budget: as many gradient evaluations as this many plain epochs (SAM: half the steps)"
    )
    batch_size: PositiveInt
    drop_last: bool = False
    weight_decay: WeightDecay = WeightDecay()
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict,
        description="lr factor per parameter class (weight, bias, norm_scale, norm_shift, norm, bias_norm); "
                    "the classes of the weight-decay rules (ablab.optim.groups)")
    sampler: Component = "iid"
    objective: Component = "standard"
    init_from: Optional[InitFrom] = None
    corrupt: Corrupt = Corrupt()
    device: str = "auto"
    deterministic: bool = True
    compute: Compute = Compute()
    seeds: Seeds = Seeds()
    replicate: int = Field(0, ge=0)
    record: Record = Field(default_factory=Record)  # built when needed: its default evaluator is a registered one

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sam" in data:
            raise ValueError("'sam' is now an objective: objective: {name: sam, rho: 0.05, adaptive: false} "
                             "(a grid axis 'sam: [null, {rho: 0.05}]' becomes 'objective: [standard, {name: sam, rho: 0.05}]')")
        return data

    @field_validator("data", "model", "optimizer", "schedule", "loss", "objective", "sampler")
    @classmethod
    def _one_component(cls, v: Component, info: ValidationInfo) -> dict[str, Any]:
        return _component(_REGISTRY_OF[info.field_name], v)

    @field_validator("lr_multipliers")
    @classmethod
    def _multipliers(cls, v: dict[str, float]) -> dict[str, float]:
        check_multipliers(v)
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: list[Component]) -> list[dict[str, Any]]:
        return _components(AUGMENTATIONS, v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_duration(self) -> "RunSpec":
        given = [k for k in ("epochs", "steps", "budget_epochs") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"duration given in two units: {' and '.join(repr(g) for g in given)}; give exactly one")
        if not given:
            raise ValueError("give the run's duration as 'epochs', 'steps' or 'budget_epochs'")
        return self

    @model_validator(mode="after")
    def _one_decay(self) -> "RunSpec":
        if self.weight_decay.value > 0 and self.optimizer.get("weight_decay"):
            raise ValueError(
                "weight decay given twice: the optimizer's 'weight_decay' and the run's 'weight_decay' block; "
                "use one (the block names its mode explicitly)"
            )
        return self

    @model_validator(mode="after")
    def _continues_forward(self) -> "RunSpec":
        if self.init_from is not None and self.epochs is not None and self.epochs <= self.init_from.epoch:
            raise ValueError(f"init_from starts at epoch {self.init_from.epoch}; 'epochs' ({self.epochs}) is the total "
                             "and must be larger")
        return self

    @model_validator(mode="after")
    def _whole_cycles(self) -> "RunSpec":
        cycle_ends = _cycle_ends(self.schedule["name"])
        if cycle_ends is not None:
            cycle_ends(self.schedule, self.epochs)  # the schedule's own check: whole cycles of whole epochs
        elif self.record.checkpoints.snapshots:
            raise ValueError("record.checkpoints.snapshots saves the end of each cycle of a cyclic schedule; "
                             f"schedule '{self.schedule['name']}' has none (use {cyclic_schedules()})")
        return self

    @property
    def snapshot_epochs(self) -> list[int]:
        """The epochs after which the schedule's cycles end (snapshots); [] without a cyclic schedule."""
        cycle_ends = _cycle_ends(self.schedule["name"])
        return cycle_ends(self.schedule, self.epochs) if cycle_ends is not None and self.epochs else []

    def checkpoint_due(self, epoch: int, last_epoch: int) -> bool:
        """Does the run save a checkpoint after ``epoch`` (its ``record.checkpoints``)?"""
        return self.record.checkpoints.due(epoch, last_epoch, self.snapshot_epochs)

    def canonical_json(self) -> str:
        """The run's canonical form: sorted keys, no whitespace, every default filled in."""
        return _canonical(self)

    @property
    def id(self) -> str:
        """Stable id: sha256 of the canonical JSON (without source locations) and the protocol version."""
        if self._id is None:
            self._id = _run_id(self)
        return self._id


def _cycle_ends(schedule: str):
    """A cyclic schedule's ``cycle_end_epochs(schedule, epochs)`` (declared on the schedule); None for the others."""
    return getattr(SCHEDULES.get(schedule), "cycle_end_epochs", None)


def cyclic_schedules() -> str:
    """The registered schedules that declare cycle ends, for a message: ``a or b``."""
    return " or ".join(n for n in SCHEDULES.list_names() if _cycle_ends(n) is not None)


def _canonical(spec: BaseModel) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _run_id(spec: BaseModel) -> str:
    data = spec.model_dump(mode="json")
    _drop_locations(data)
    text = f"ablab-protocol-{PROTOCOL_VERSION}:{json.dumps(data, sort_keys=True, separators=(',', ':'))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop_locations(data: Any) -> None:
    """Where a source study lives is not part of what a run computes; nor is a bit change that is off
    (``seeds.bitflip: null``: the ids of runs stored before the source existed stay the same), nor are
    settings added later while at their defaults (no ``lr_multipliers``, the ``iid`` sampler)."""
    if isinstance(data, dict):
        for key in ("init_from", "source"):
            if isinstance(data.get(key), dict):
                data[key].pop("study", None)
        seeds = data.get("seeds")
        if isinstance(seeds, dict) and "bitflip" in seeds and seeds["bitflip"] is None:
            seeds.pop("bitflip")
        if data.get("lr_multipliers") == {}:  # nor settings added later, at their defaults: earlier ids stay
            data.pop("lr_multipliers")
        if data.get("sampler") == {"name": "iid"}:
            data.pop("sampler")
        if isinstance(data.get("source_study"), str):
            data.pop("source_study")
        for value in data.values():
            _drop_locations(value)
    elif isinstance(data, list):
        for value in data:
            _drop_locations(value)


class Member(_Strict):
    """One stored run evaluated by a post-hoc unit: its id, the checkpoint epoch and its resolved spec."""

    run: str = Field(pattern=r"^[0-9a-f]{16}$")
    epoch: NonNegativeInt
    label: str = ""
    spec: RunSpec


class EvalSpec(_OwnCode):
    """A post-hoc unit: stored checkpoints of one or more runs, evaluated without training.

    ``members`` is one run (single), an ordered pair or a disjoint group; ``source_study`` is the
    results directory that holds their checkpoints (not part of the id).
    """

    kind: Literal["evaluate"] = "evaluate"
    source_study: str
    members: list[Member] = Field(min_length=1)
    evaluators: Evaluators = ["standard"]
    eval_splits: list[Literal["train", "val", "test"]] = ["test"]
    eval_batch_size: PositiveInt = 1024
    device: str = "auto"
    deterministic: bool = True
    replicate: int = Field(0, ge=0)


    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return RunSpec._device(v)

    def canonical_json(self) -> str:
        return _canonical(self)

    @property
    def id(self) -> str:
        """The unit's id: its members and settings, not its position in the study (``replicate``)."""
        if self._id is None:
            self._id = _run_id(self.model_copy(update={"replicate": 0}))
        return self._id


UnitSpec = Union[RunSpec, EvalSpec]


def parse_unit(spec_json: str) -> UnitSpec:
    """A stored or transmitted run spec back as its model (training run or post-hoc unit)."""
    data = json.loads(spec_json)
    return EvalSpec.model_validate(data) if data.get("kind") == "evaluate" else RunSpec.model_validate(data)


class SeedAxis(_Strict):
    """Replicates of every variant; ``vary`` names the sources that change between them.

    Replicate r gives each varied stream the seed ``base + r``; a held stream keeps ``base.seeds``'
    value, or ``base`` (``bitflip``: None, no change). Varying ``kernels`` runs the replicates with
    nondeterministic kernels (``deterministic: false``). ``seeds.vary`` and ``seeds.replicates`` may
    also be grid/zip axes (per-variant values: a trunk with one replicate, per-source rows).
    """

    replicates: PositiveInt = 1
    vary: list[SeedSource] = list(RANDOM_SOURCES)
    base: int = 0


def _check_metric_ref(ref: str) -> str:
    split, _, name = ref.partition(".")
    if split not in ("train", "val", "test", "batch") or not name:
        raise ValueError(f"a metric is 'split.name' with split train, val, test or batch; got {ref!r}")
    return ref


MetricRef = Annotated[str, AfterValidator(_check_metric_ref)]
"""A recorded metric as ``split.name``: ``test.accuracy``, ``batch.loss``."""


class GridTable(_Strict):
    """A heatmap table: the mean of ``metric`` over replicates, axis ``rows`` × axis ``cols``.

    Axis names are the study's axis paths (``optimizer.lr``, ``sam``); one table per combination
    of the ``facets`` axes (None: every other varied axis).
    """

    rows: str
    cols: str
    metric: MetricRef = "test.loss"
    facets: Optional[list[str]] = None


class BestSettings(_Strict):
    """The top-k variants by ``metric``, with Welch's t-tests against the runner-up and the baseline.

    ``baseline``: axis path (or base-run path) → value, e.g. ``{sam: null}``; the best variant
    matching it is the baseline.
    """

    metric: MetricRef
    k: PositiveInt = 5
    baseline: Optional[Union[str, dict[str, Any]]] = None

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, v: Any) -> Any:
        """A label string is the selector ``{label: ...}``, so both spellings select alike."""
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("a baseline names a variant label or axis values; got an empty name")
            return {"label": v}
        if v is not None and not v:
            raise ValueError("a baseline names a variant label or axis values; got an empty mapping")
        return v


class ReportSettings(_Strict):
    """How the report selects and shows results."""

    selection: Literal["final", "best"] = "final"
    select_on: MetricRef = "val.accuracy"
    metrics: list[MetricRef] = ["test.accuracy", "test.loss", "val.accuracy", "train.loss"]
    curves: list[MetricRef] = ["train.loss", "val.accuracy", "test.accuracy"]
    grids: list[GridTable] = []  # heatmap tables over two axes (ablab.report.grids)
    best: Optional[BestSettings] = None  # best configurations with p-values (ablab.report.grids)
    # role (lower, upper) → variant label, or the first part of labels (a family: ``vanilla`` for
    # ``vanilla, lr_scale=10``), or axis values ``{model.norm: none}``: each variant is compared with
    # the matching variant of its own other axis values (ablab.report.baselines);
    # the final table gets Δ to each, the curves draw them black and grey
    baselines: dict[Literal["lower", "upper"], Union[str, dict[str, Any]]] = {}

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: dict[str, Any]) -> dict[str, Any]:
        if any(not (name.strip() if isinstance(name, str) else name) for name in v.values()):
            raise ValueError("a baseline names a variant label or axis values; got an empty one")
        return v


class Resources(_Strict):
    """What each run asks of a Ray cluster; it does not change a run's numbers."""

    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0, description="fractional values let several small runs share one GPU")


class Execute(_Strict):
    """How the executor runs the study's runs; it changes no run's numbers (and no run id).

    ``pack``: runs whose specs differ only in their seeds train R at a time in one process as one
    packed model (``ablab.train.packed``; docs/packing.md): ``auto`` packs where that reproduces the
    runs alone bitwise and is faster (R from the model's size and the batch), ``off`` never, an
    integer R packs up to R runs.
    """

    pack: Union[Literal["auto", "off"], PositiveInt] = "auto"

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v: Any) -> Any:
        if v is False:  # YAML 1.1 reads a bare ``off`` as false
            return "off"
        if isinstance(v, bool) or (v not in ("auto", "off") and not (isinstance(v, int) and v >= 1)):
            raise ValueError("pack is auto, off or a number of runs (1 or more)")
        return v


class Groups(_Strict):
    groups: PositiveInt = Field(description="disjoint groups of this many runs, in study order")


MemberKind = Union[Literal["single", "pairs", "snapshots"], Groups]
"""What one unit of a post-hoc study evaluates: a run, an ordered pair, a disjoint group, one run's snapshots."""


def member_kind(value: Any) -> MemberKind:
    """A ``members`` value (top level or an axis value) as its model; ValueError naming the choices."""
    try:
        return TypeAdapter(MemberKind).validate_python(value)
    except ValidationError:
        raise ValueError(f"{value!r} is no unit kind: single, pairs, snapshots or {{groups: N}} (N ≥ 1)") from None


def member_kind_text(kind: MemberKind) -> str:
    """``single``, ``pairs``, ``snapshots`` or ``groups of N``: a unit kind in a sentence."""
    return kind if isinstance(kind, str) else f"groups of {kind.groups}"


class Source(_Strict):
    """The stored runs a post-hoc study evaluates: a results directory, a run selector, a checkpoint.

    ``runs`` maps axis paths (or base-run paths, or ``replicate``/``label``) to values; every finished
    run that matches all of them is used (all finished runs when empty). ``checkpoint``: ``final`` or
    an epoch number.
    """

    study: str
    runs: dict[str, Any] = {}
    checkpoint: Union[Literal["final"], NonNegativeInt] = "final"


def _axis_path(path: str) -> None:
    """A grid or zip key is a path in the base run (``model.widths``), not from the study's top (``base.…``)."""
    if path.startswith("base."):
        raise ValueError(f"axis '{path}': axes are paths in the base run, without 'base.': write '{path[5:]}'")


class Study(_Strict):
    """A base run plus the axes to vary; or, with ``source``, stored runs evaluated without training.

    A post-hoc study's ``base`` holds the evaluation settings (``evaluators``, ``eval_splits``,
    ``eval_batch_size``, ``device``) and ``members`` says what one unit evaluates: each run
    (``single``), every ordered pair (``pairs``), disjoint groups (``{groups: N}``), or the
    cycle-end checkpoints of one run of a cyclic schedule (``snapshots``: a snapshot ensemble).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    imports: list[ModuleName] = []  # the researcher's modules that register components (ablab.plugins)
    base: dict[str, Any] = {}
    source: Optional[Source] = None
    members: MemberKind = "single"
    grid: dict[str, list[Any]] = {}
    zip: Union[dict[str, list[Any]], list[dict[str, list[Any]]]] = []
    seeds: SeedAxis = SeedAxis()
    report: ReportSettings = ReportSettings()
    resources: Resources = Resources()
    # validation rules the researcher overrides on purpose: augment_order runs `augment` as written even
    # with a mix before a crop or flip, or a colour change after normalize (ablab.validate)
    insist: list[Literal["augment_order"]] = []
    execute: Execute = Execute()

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            _axis_path(path)
            if not values:
                raise ValueError(f"axis '{path}' has no values")
        return v

    @field_validator("zip")
    @classmethod
    def _zip(cls, v: Any) -> list[dict[str, list[Any]]]:
        groups = [v] if isinstance(v, dict) else v
        for group in groups:
            for path in group:
                _axis_path(path)
            lengths = {k: len(vals) for k, vals in group.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip axes must have equal lengths, got {lengths}")
            if lengths and not next(iter(lengths.values())):
                raise ValueError("zip axes have no values")
        return groups

    @model_validator(mode="after")
    def _kind(self) -> "Study":
        if self.source is None:
            if not self.base:
                raise ValueError("a study needs a 'base' run (or a 'source' of stored runs to evaluate)")
            if self.members != "single" or "members" in self.axes:
                raise ValueError("'members' belongs to a post-hoc study: give 'source' too")
        elif self.seeds.replicates > 1:
            raise ValueError("a post-hoc study has no seed replicates: its units are the source's runs")
        elif "metrics" not in self.report.model_fields_set:
            self.report.metrics = []  # the report shows what the evaluators recorded
        return self

    @model_validator(mode="after")
    def _members_axis(self) -> "Study":
        """``members`` as a grid or zip axis (seed 002 Table 5.5's N = 2…5 in one study): valid values, not twice."""
        if "members" not in self.axes:
            return self
        where = "grid.members" if "members" in self.grid else "zip.members"
        if self.members != "single":
            raise ValueError(f"{where}: 'members' is an axis of this study; leave the top-level 'members' out")
        for value in self.axis_values("members"):
            try:
                member_kind(value)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return self

    def axis_values(self, path: str) -> list[Any]:
        """The values an axis takes, from ``grid`` or its ``zip`` group (empty when ``path`` is no axis)."""
        if path in self.grid:
            return list(self.grid[path])
        return next((list(group[path]) for group in self.zip if path in group), [])

    def unit_kind(self, axes: dict[str, Any]) -> MemberKind:
        """The members of a variant's units: its ``members`` axis value, else the study's ``members``."""
        return member_kind(axes["members"]) if "members" in axes else self.members

    @property
    def unit_kinds(self) -> list[MemberKind]:
        """Every unit kind the study evaluates, in axis order (one unless ``members`` is an axis)."""
        kinds = [member_kind(v) for v in self.axis_values("members")] or [self.members]
        return [k for i, k in enumerate(kinds) if k not in kinds[:i]]

    @property
    def post_hoc(self) -> bool:
        return self.source is not None

    @property
    def axes(self) -> list[str]:
        """The axis paths the study varies, in the order it declares them: ``grid``, then each ``zip`` group."""
        return [*self.grid, *(k for group in self.zip for k in group)]

    @model_validator(mode="after")
    def _grid_table_axes(self) -> "Study":
        """Heatmap tables name axes of this study (checked now, not after the last run)."""
        from ablab.registry import closest_names

        axes = self.axes
        for i, table in enumerate(self.report.grids):
            for field, names in (("rows", [table.rows]), ("cols", [table.cols]), ("facets", table.facets or [])):
                for name in names:
                    if name not in axes:
                        known = closest_names(name, axes) if axes else " The study varies no axis."
                        raise ValueError(f"report.grids.{i}.{field}: '{name}' is not an axis of the study.{known}")
        return self


class Variant(BaseModel):
    """One expanded run with its place in the study."""

    spec: UnitSpec
    label: str
    axes: dict[str, Any]
    replicate: int
    origin: dict[str, Any] = {}  # provenance shown in the report: a selection's rank, a unit's members

    @property
    def id(self) -> str:
        return self.spec.id


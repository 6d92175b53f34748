"""Study and RunSpec models: YAML loading, validation, grid expansion and stable run ids.

A study is a ``base`` run plus axes: ``grid`` (cartesian product), ``zip`` (vary together) and
``seeds`` (replicates, and which random streams vary between them). Axis keys are dotted paths
into the base run (``optimizer.lr``). Expansion yields fully resolved ``RunSpec``s.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator, model_validator

from ablab import PROTOCOL_VERSION
from ablab.errors import SpecError, split_located
from ablab.registry import AUGMENTATIONS, DATASETS, LOSSES, MODELS, OPTIMIZERS, PROBES, SCHEDULES, Registry, load_components
from ablab.seeding import STREAMS

load_components()

Stream = Literal["init", "shuffle", "augment", "stochastic"]
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


_REGISTRY_OF = {"data": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES}


class Seeds(_Strict):
    """One integer per random stream (see ``ablab.seeding``)."""

    init: int = 0
    shuffle: int = 0
    augment: int = 0
    stochastic: int = 0


class Record(_Strict):
    """What a run records: training metrics every ``every_steps`` steps, evaluations per epoch."""

    every_steps: PositiveInt = 50
    eval_splits: list[Literal["train", "val", "test"]] = ["train", "val", "test"]
    eval_every_epochs: PositiveInt = 1
    eval_batch_size: PositiveInt = 1024
    checkpoint: bool = False
    probes: list[Component] = []
    sharpness: Optional[Sharpness] = None

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
    mode: Literal["l2", "decoupled"] = "l2"
    params: Literal["all", "exclude_bias_norm", "gamma_to_one"] = "exclude_bias_norm"


class Sam(_Strict):
    """Sharpness-aware minimisation around the base optimizer (Foret et al. 2021; ASAM: adaptive)."""

    rho: float = Field(0.05, gt=0.0)
    adaptive: bool = False
    eta: float = Field(0.01, ge=0.0)


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

    ``precision: bf16`` autocasts convolutions and matmuls to bfloat16 while norm layers and the
    loss stay in float32; ``channels_last`` stores image activations NHWC (faster convolutions on
    GPUs); ``compile`` wraps the model in ``torch.compile`` (compiled code is cached and reused by
    later runs of the same architecture in one worker process).
    """

    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False


class Sharpness(_Strict):
    """Sharpness at the end of training, on ``batches`` training batches in a fixed order."""

    rho: float = Field(0.05, gt=0.0)
    batches: PositiveInt = 8
    hessian_iters: int = Field(20, ge=0, description="power iterations for the top Hessian eigenvalue; 0 skips it")


class RunSpec(_Strict):
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
    sam: Optional[Sam] = None
    corrupt: Corrupt = Corrupt()
    device: str = "auto"
    deterministic: bool = True
    compute: Compute = Compute()
    seeds: Seeds = Seeds()
    replicate: int = Field(0, ge=0)
    record: Record = Record()

    @field_validator("data", "model", "optimizer", "schedule", "loss")
    @classmethod
    def _one_component(cls, v: Component, info: ValidationInfo) -> dict[str, Any]:
        return _component(_REGISTRY_OF[info.field_name], v)

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

    def canonical_json(self) -> str:
        """The run's canonical form: sorted keys, no whitespace, every default filled in."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """Stable id: sha256 of the canonical JSON and ablab's protocol version (16 hex digits)."""
        text = f"ablab-protocol-{PROTOCOL_VERSION}:{self.canonical_json()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class SeedAxis(_Strict):
    """Replicates of every variant; ``vary`` names the streams that change between them."""

    replicates: PositiveInt = 1
    vary: list[Stream] = list(STREAMS)
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
    baseline: Optional[dict[str, Any]] = None


class ReportSettings(_Strict):
    """How the report selects and shows results."""

    selection: Literal["final", "best"] = "final"
    select_on: MetricRef = "val.accuracy"
    metrics: list[MetricRef] = ["test.accuracy", "test.loss", "val.accuracy", "train.loss"]
    curves: list[MetricRef] = ["train.loss", "val.accuracy", "test.accuracy"]
    grids: list[GridTable] = []  # heatmap tables over two axes (ablab.report.grids)
    best: Optional[BestSettings] = None  # best configurations with p-values (ablab.report.grids)
    # role (lower, upper) → variant label, or the first part of labels (a family: ``vanilla`` for
    # ``vanilla, lr_scale=10``); the final table gets Δ to each, the curves draw them black and grey
    baselines: dict[Literal["lower", "upper"], str] = {}

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not str(name).strip() for name in v.values()):
            raise ValueError("a baseline names a variant label; got an empty name")
        return v


class Resources(_Strict):
    """What each run asks of a Ray cluster; it does not change a run's numbers."""

    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0, description="fractional values let several small runs share one GPU")


class Study(_Strict):
    """A base run plus the axes to vary."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: dict[str, Any]
    grid: dict[str, list[Any]] = {}
    zip: Union[dict[str, list[Any]], list[dict[str, list[Any]]]] = []
    seeds: SeedAxis = SeedAxis()
    report: ReportSettings = ReportSettings()
    resources: Resources = Resources()

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            if not values:
                raise ValueError(f"axis '{path}' has no values")
        return v

    @field_validator("zip")
    @classmethod
    def _zip(cls, v: Any) -> list[dict[str, list[Any]]]:
        groups = [v] if isinstance(v, dict) else v
        for group in groups:
            lengths = {k: len(vals) for k, vals in group.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip axes must have equal lengths, got {lengths}")
            if lengths and not next(iter(lengths.values())):
                raise ValueError("zip axes have no values")
        return groups

    @model_validator(mode="after")
    def _grid_table_axes(self) -> "Study":
        """Heatmap tables name axes of this study (checked now, not after the last run)."""
        from ablab.registry import closest_names

        axes = [*self.grid, *(k for group in self.zip for k in group)]
        for i, table in enumerate(self.report.grids):
            for field, names in (("rows", [table.rows]), ("cols", [table.cols]), ("facets", table.facets or [])):
                for name in names:
                    if name not in axes:
                        known = closest_names(name, axes) if axes else " The study varies no axis."
                        raise ValueError(f"report.grids.{i}.{field}: '{name}' is not an axis of the study.{known}")
        return self


class Variant(BaseModel):
    """One expanded run with its place in the study."""

    spec: RunSpec
    label: str
    axes: dict[str, Any]
    replicate: int

    @property
    def id(self) -> str:
        return self.spec.id


# ---------------------------------------------------------------- loading


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and validate a study YAML; ``overrides`` are ``path=value`` strings on ``base``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read: {err}", file=str(path)) from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {err}".replace("\n", " "), file=str(path)) from None
    if not isinstance(raw, dict):
        raise SpecError("a study is a YAML mapping with keys name, base, grid, zip, seeds, report", file=str(path))
    raw.setdefault("name", path.stem)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"an override is PATH=VALUE, got {item!r}", file="--set")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        # paths start at the study (seeds.replicates, report.selection, base.seeds.init);
        # any other path is a setting of the base run (optimizer.lr, data.path)
        if key.split(".")[0] in Study.model_fields:
            set_path(raw, key, parsed, where=f"--set {key}")
        elif isinstance(raw.get("base"), dict):
            set_path(raw["base"], key, parsed, where=f"--set {key}")
        else:
            raise SpecError("the study has no 'base' mapping to override", file=str(path))
    try:
        return Study.model_validate(raw)
    except pydantic.ValidationError as err:
        raise _spec_error(err, str(path)) from None


def _spec_error(err: pydantic.ValidationError, file: str, prefix: str = "") -> SpecError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = list(first["loc"][:-1])
        allowed = _allowed_keys(err.title, parent)
        if allowed:
            from ablab.registry import closest_names

            msg += "." + closest_names(str(first["loc"][-1]), allowed)
    got = first.get("input")
    if first["type"] != "extra_forbidden" and isinstance(got, (str, int, float, bool)) and "(got" not in msg:
        msg += f" (got {got!r})"
    field, msg = split_located(".".join(p for p in (prefix, loc) if p) or None, msg)
    return SpecError(msg, field=field, file=file)


def _allowed_keys(title: str, parent: list) -> list[str]:
    models = {"Study": Study, "RunSpec": RunSpec}
    model = models.get(title)
    for part in parent:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model is not None else []


def set_path(tree: dict[str, Any], path: str, value: Any, where: str = "") -> None:
    """Set ``tree[a][b][c] = value`` for ``path='a.b.c'``; a component given as a name becomes a dict."""
    parts = path.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else (
            node.get(part) if isinstance(node, dict) else None
        )
        if isinstance(nxt, str):
            nxt = {"name": nxt}
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, (dict, list)):
            raise SpecError(f"cannot set '{path}': '{'.'.join(parts[: i + 1])}' is a value, not a mapping", field=where or path)
        if isinstance(node, list):
            node[int(part)] = nxt
        else:
            node[part] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise SpecError(f"cannot set '{path}': index {last} out of range", field=where or path)
        node[int(last)] = value
    else:
        node[last] = value


# ---------------------------------------------------------------- expansion


def _label_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" in value:
        rest = ", ".join(f"{k}={_label_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if rest else str(value["name"])
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={_label_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_label_value(v) for v in value) + "]"
    return str(value)


def make_label(axes: dict[str, Any], named: frozenset[str] = frozenset()) -> str:
    """A readable variant label from its axis values: ``optimizer=adam, lr=0.001``.

    A zip group's ``label`` names that group's values (the axes in ``named``); axes from other
    groups are appended: ``bn_gamma, lr_scale=10``.
    """
    if not axes:
        return "base"
    parts = [str(axes["label"])] if "label" in axes else []
    for path, value in axes.items():
        if path == "label" or path in named:
            continue
        short = path[: -len(".name")] if path.endswith(".name") else path
        parts.append(f"{short}={_label_value(value)}")
    return ", ".join(parts)


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


def expand(study: Study, file: str = "") -> list[Variant]:
    """Every run of the study: variants (grid × zip) × seed replicates, each validated."""
    out: list[Variant] = []
    seen: dict[str, str] = {}
    named = frozenset(k for group in study.zip if "label" in group for k in group)
    for axes in _axis_combinations(study):
        label = make_label(axes, named)
        for r in range(study.seeds.replicates):
            raw = copy.deepcopy(study.base)
            for path, value in axes.items():
                if path != "label":
                    set_path(raw, path, copy.deepcopy(value), where=path)
            seeds = {s: study.seeds.base + (r if s in study.seeds.vary else 0) for s in STREAMS}
            raw.setdefault("seeds", {})
            if not isinstance(raw["seeds"], dict):
                raise SpecError("base.seeds must be a mapping of stream: int", file=file, field="base.seeds")
            raw["seeds"] = {**seeds, **{k: v for k, v in raw["seeds"].items() if k not in study.seeds.vary}}
            raw["replicate"] = r
            try:
                spec = RunSpec.model_validate(raw)
            except pydantic.ValidationError as err:
                e = _spec_error(err, file, prefix="base")
                where = f" (variant '{label}')" if axes else ""
                raise SpecError(e.message + where, field=e.field, file=file) from None
            if spec.id in seen:
                raise SpecError(
                    f"variants '{seen[spec.id]}' and '{label}' are the same experiment "
                    "(an axis does not change the run)", file=file, field="grid",
                )
            seen[spec.id] = label
            out.append(Variant(spec=spec, label=label, axes=axes, replicate=r))
    return out

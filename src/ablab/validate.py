"""Deep validation of a whole study before its first run, with the code the runs themselves use.

``spec.expand`` already checks every field's type and every component name; this calls
``build_run`` for each distinct run set-up (models on the ``meta`` device, so no memory or time
is spent) to catch what only the component can know: a missing or corrupt dataset file, a norm
placement index out of range, a loss that does not fit the task, a probe or evaluator that cannot
be built. Each distinct model × data shape then runs one forward and backward pass (eval mode) on the CPU,
on two examples of the real training split (a shape bug in a model is found here, not in every run).
It also estimates the disk the study's artifacts will take.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pydantic

from ablab.errors import AblabError, SpecError, StoreError
from ablab.spec import EvalSpec, RunSpec, Study, Variant

DEFAULT_MAX_ARTIFACT_GB = 20.0
PASS_EXAMPLES = 2  # examples in the one forward and backward pass (at most the run's batch size): a batch, not one
_OPTIMIZER_SLOTS = 2  # state tensors per parameter assumed for the estimate (Adam's two; SGD momentum has one)
# a checkpoint's bytes beyond its tensors' data: three CPU generator states of 5056 bytes (shuffle, augment,
# stochastic) and the zip/pickle framing, about 512 bytes per tensor plus a few kB (measured with torch.save)
_CHECKPOINT_BASE = 3 * 5056 + 4096
_TENSOR_FRAMING = 512


def _key(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@dataclass
class Estimate:
    """Bytes the study's artifacts are expected to take: checkpoints, and the evaluators' files (logits of runs,
    ensembles and TTA, labels, activations) as ``predictions``."""

    checkpoints: int = 0
    predictions: int = 0
    steps: dict = None  # run id -> training steps it will take (a continued run: after its start)

    def __post_init__(self) -> None:
        self.steps = {} if self.steps is None else self.steps

    @property
    def total(self) -> int:
        return self.checkpoints + self.predictions


def check_variants(variants: list[Variant], file: str, max_artifact_gb: float = DEFAULT_MAX_ARTIFACT_GB,
                   local_devices: bool = True, study: Study | None = None) -> Estimate:
    """Raise one ``SpecError`` (file, field, variant) for the first run that cannot be built; returns the
    artifact estimate, refused when above ``max_artifact_gb``. ``local_devices``: the runs' devices must
    exist on this machine (False for runs sent to a Ray cluster, whose nodes have their own). With
    ``study``, its report block is checked against what the runs record (``ablab.validate_report``)."""
    from ablab.train.build import PartError, build_run, load_run_data
    from ablab.validate_report import check_report, recorded_by

    datasets: dict[str, object] = {}
    built: dict[str, tuple[int, int, dict]] = {}
    passed: set[str] = set()  # model × data shape keys whose forward and backward pass ran
    plans: dict[str, tuple[RunSpec, int, dict]] = {}  # run id -> (spec, planned epochs, parameter shapes)
    unit_models: dict[str, object] = {}  # a post-hoc unit's model (meta device), built when an evaluator needs it
    estimate = Estimate()
    recorded: set[str] = set()  # split.name of every metric some run records
    for v in variants:
        spec = v.spec
        where = f" (variant '{v.label}')" if v.axes else ""

        def fail(err: Exception, field: str) -> SpecError:
            if isinstance(err, SpecError):
                e = err.located(prefix=field)
                return SpecError(e.message + where, field=e.field, file=file)
            return SpecError(f"{err}{where}", field=field, file=file)

        problem = _device_problem(spec.device) if local_devices else None
        if problem:
            raise fail(SpecError(problem), "base.device")
        if isinstance(spec, EvalSpec):
            _check_unit(spec, fail, datasets, unit_models)
            recorded |= _unit_records(spec)
            estimate.predictions += _unit_outputs(spec, datasets, unit_models)
            continue
        dkey = _key([spec.data, spec.corrupt])
        if dkey not in datasets:
            try:
                datasets[dkey] = load_run_data(spec)
            except AblabError as err:
                raise fail(err, "base.data") from None
        data = datasets[dkey]
        # the seeds do not change what is built, except that a bit change needs a weight layer
        key = _key([spec.model_dump(mode="json", exclude={"seeds", "replicate", "init_from"}),
                    spec.seeds.bitflip is not None])
        if key not in built:
            for split in spec.record.eval_splits:
                if split not in data.splits:
                    raise fail(SpecError(f"dataset has no '{split}' split (has {', '.join(data.splits)})"),
                               "base.record.eval_splits")
            try:
                loss = _loss(spec)
            except SpecError as err:
                raise fail(err, "base.loss") from None
            if getattr(loss, "needs_classes", False) and data.task != "classification":
                raise fail(SpecError(f"loss '{spec.loss['name']}' needs a classification task; dataset is {data.task} "
                                     "(use mse)"), "base.loss")
            check_classes = getattr(loss, "check_classes", None)  # a loss whose settings depend on C
            if check_classes is not None and data.num_classes:
                try:
                    check_classes(data.num_classes)
                except SpecError as err:
                    raise fail(err, "base.loss") from None
            try:
                parts = build_run(spec, data=data, meta=True)
            except PartError as err:  # any failure to build is a spec problem of that field
                raise fail(err.cause, f"base.{err.field}") from None
            try:
                check_batch_sizes(parts.model, len(data.splits["train"]), spec.batch_size, spec.drop_last)
            except ValueError as err:
                raise fail(SpecError(str(err)), "base.batch_size") from None
            pass_key = _key([spec.model, spec.data, spec.corrupt.model_dump(mode="json"), spec.augment, spec.loss,
                             min(spec.batch_size, PASS_EXAMPLES)])
            if pass_key not in passed:
                try:
                    forward_backward(spec, data, parts)
                except Exception as err:  # noqa: BLE001 - whatever the model raises is this spec's problem
                    raise fail(SpecError(_pass_failure(err)), "base.model") from None
                passed.add(pass_key)
            params = sum(p.numel() for p in parts.model.parameters())
            buffers = sum(b.numel() for b in parts.model.buffers())
            shapes = {k: tuple(t.shape) for k, t in parts.model.state_dict().items()}
            sizes = _outputs_per_evaluation(parts.evaluators, spec.record.eval_splits, data, lambda: parts.model)
            built[key] = (params, buffers, {"epochs": parts.duration.epochs, "sizes": sizes, "shapes": shapes,
                                            "total_steps": parts.duration.total_steps,
                                            "steps_per_epoch": parts.duration.steps_per_epoch})
            if "augment_order" not in (study.insist if study is not None else []):
                problem = augment_order_problem(spec.augment, parts.augments)
                if problem:
                    raise fail(SpecError(problem), "base.augment")
            for ev in parts.evaluators:
                try:
                    ev.check_model(parts.model)
                except ValueError as err:
                    raise fail(SpecError(str(err)), "base.record.evaluators") from None
                for split in ev.splits_for(spec.record.eval_splits):
                    if split not in data.splits:
                        raise fail(SpecError(f"evaluator asks for split '{split}'; the dataset has "
                                             f"{', '.join(data.splits)}"), "base.record.evaluators")
            recorded |= recorded_by(parts.evaluators, spec.record.eval_splits, parts.classification, training=True)
        params, buffers, facts = built[key]
        _add_estimate(estimate, spec, params, buffers, facts)
        plans[v.id] = (spec, facts["epochs"], facts["shapes"])
        start = spec.init_from.epoch * facts["steps_per_epoch"] if spec.init_from is not None else 0
        estimate.steps[v.id] = max(0, facts["total_steps"] - start)
    for v in variants:
        if isinstance(v.spec, RunSpec) and v.spec.init_from is not None:
            where = f" (variant '{v.label}')" if v.axes else ""
            _check_continuation(v.spec, plans, file, where)
    for v in variants:  # after the continuations: a source that never reaches its epoch is said as such
        if isinstance(v.spec, RunSpec):
            _check_epochs_within(v.spec, plans[v.id][1], file, f" (variant '{v.label}')" if v.axes else "")
    _check_stored_sources(variants, file)
    if study is not None:
        check_report(study, variants, recorded, file)
    if estimate.total > max_artifact_gb * 1e9:
        raise SpecError(
            f"the study's artifacts would take about {estimate.total / 1e9:.1f} GB (checkpoints "
            f"{estimate.checkpoints / 1e9:.1f} GB, evaluator outputs {estimate.predictions / 1e9:.1f} GB), more than the "
            f"limit of {max_artifact_gb:g} GB; save fewer checkpoints or raise --max-artifact-gb", file=file,
            field="base.record.checkpoints")
    return estimate


def check_batch_sizes(model, n_train: int, batch_size: int, drop_last: bool) -> None:
    """Every training batch size fits each layer that declares ``check_batch(n, what)`` (ValueError otherwise)."""
    sizes = [(min(batch_size, n_train), "")]
    if not drop_last and n_train > batch_size and n_train % batch_size:
        sizes.append((n_train % batch_size, f"the last training batch of {n_train % batch_size} ({n_train} examples "
                                            f"in batches of {batch_size}; drop_last: true drops it)"))
    checks = [m.check_batch for m in model.modules() if callable(getattr(m, "check_batch", None))]
    for check in checks:
        for n, what in sizes:
            check(n, what)


def forward_backward(spec: RunSpec, data, parts) -> None:
    """One forward and backward pass of the run's model (built for real, on the CPU, from its ``init`` seed)
    on the first ``PASS_EXAMPLES`` training examples, augmented as the run augments them, through the run's
    loss. In eval mode: the shapes are the training pass's, while what a model does only when it trains
    (running statistics, dropout draws, a researcher's own side effects) stays out of the driver. The
    global random state is left as it was."""
    import torch

    from ablab.train.build import build_model

    train = data.splits["train"]
    n = min(PASS_EXAMPLES, spec.batch_size, len(train))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a pass on two examples gains nothing from threads, and loses on a busy machine
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(spec, data)
            model.eval()
            x, y = train.rows(slice(0, n))
            generator = torch.Generator().manual_seed(0)
            for aug in parts.augments:
                x, y = aug(x, y, generator)
            parts.loss_fn(model(x), y).backward()
    finally:
        torch.set_num_threads(threads)


def _pass_failure(err: Exception) -> str:
    """One line saying that the pass failed, and PyTorch's reason."""
    reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return f"one forward and backward pass of the model on training examples failed: {reason}"


def augment_order_problem(written: list, steps: list) -> str | None:
    """Why the ``augment`` steps run in an order that makes no sense, naming them; None when it does.

    A mix before a crop or flip (seed 002 §2.4.1: mixing after them was worth > 1 % on CIFAR-10), or a
    colour change after ``normalize`` (it expects pixels in [0, 1]). Roles are the steps' ``stage``s."""
    from ablab.data.augment import COLOUR, MIX, NORMALIZE, SPATIAL

    stages = [getattr(step, "stage", None) for step in steps]
    names = [f"augment.{i} '{w if isinstance(w, str) else w.get('name')}'" for i, w in enumerate(written)]
    for later, stage in enumerate(stages):
        earlier = [i for i in range(later) if stages[i] == {SPATIAL: MIX, COLOUR: NORMALIZE}.get(stage)]
        if not earlier:
            continue
        first = earlier[0]
        if stage == SPATIAL:
            return (f"{names[first]} mixes images before {names[later]} crops or flips them: list the mix after "
                    "every crop and flip (seed 002 §2.4.1), or set 'insist: [augment_order]' to run it as written")
        return (f"{names[later]} changes colours after {names[first]}: it expects pixels in [0, 1]; list it before "
                "normalize, or set 'insist: [augment_order]' to run it as written")
    return None


def _check_epochs_within(spec: RunSpec, last: int, file: str, where: str) -> None:
    """Checkpoint and evaluator epochs fall within training (0..``last``, the epoch its duration ends at):
    one after the end would save or record nothing."""
    from ablab.registry import EVALUATORS

    late = [e for e in spec.record.checkpoints.epochs if e > last]
    if late:
        raise SpecError(f"epoch {late[0]} is after the run's last epoch {last}: no checkpoint would be saved there"
                        + where, file=file, field="base.record.checkpoints.epochs")
    for i, e in enumerate(spec.record.evaluators):
        epochs = EVALUATORS.create(e).epochs
        late = [x for x in epochs if x > last] if isinstance(epochs, list) else []
        if late:
            raise SpecError(f"epoch {late[0]} is after the run's last epoch {last}: the evaluator would record "
                            "nothing there" + where, file=file, field=f"base.record.evaluators.{i}.epochs")


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine, or None (``auto`` always can)."""
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        suffix = device.partition(":")[2]
        if ":" in device and not suffix.isdigit():
            return f"device '{device}': expected cuda or cuda:N with N a device number"
        index = int(suffix or 0)
        if count == 0:
            return f"device '{device}' but this machine has no CUDA device (torch {torch.__version__}); use auto or cpu"
        if index >= count:
            return f"device '{device}' but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}"
    if device == "mps" and not torch.backends.mps.is_available():
        return "device 'mps' but Apple's MPS backend is not available here; use auto or cpu"
    return None


def _check_continuation(spec: RunSpec, plans: dict, file: str, where: str) -> None:
    """A continued run trains past its source's epoch, from a checkpoint its source saves, with a model the
    checkpoint fits."""
    init = spec.init_from
    _, epochs, shapes = plans[spec.id]
    if epochs <= init.epoch:
        raise SpecError(f"the run continues from epoch {init.epoch} but its duration ends at epoch {epochs}: "
                        "nothing would be trained (its epochs/steps/budget_epochs are totals)" + where, file=file,
                        field="base.init_from.epoch")
    if init.study is None:
        source, source_epochs, source_shapes = plans[init.run]
        if not source.checkpoint_due(init.epoch, source_epochs) or init.epoch > source_epochs:
            raise SpecError(f"the source run saves no checkpoint at epoch {init.epoch} (it trains {source_epochs} "
                            "epochs; set its record.checkpoints)" + where, file=file, field="base.init_from.epoch")
    else:
        source_shapes = _stored_shapes(init.study, init.run)
    if source_shapes is not None and source_shapes != shapes:
        diff = next((k for k in sorted(set(shapes) | set(source_shapes)) if shapes.get(k) != source_shapes.get(k)), "")
        raise SpecError(f"the source run's checkpoint does not fit this run's model ({diff}: "
                        f"{source_shapes.get(diff)} in the source, {shapes.get(diff)} here)" + where, file=file,
                        field="base.model")


def _check_stored_sources(variants: list[Variant], file: str) -> None:
    """Every checkpoint read from another results directory (``init_from.study``, a post-hoc ``source``) is
    indexed there and is a regular file with its recorded sha256: otherwise one ``SpecError`` naming the file."""
    from ablab.execute.files import checkpoint_file, checkpoints_read
    from ablab.store import Store

    wanted: dict[str, dict[tuple[str, int], str]] = {}  # results directory -> (run, epoch) -> field
    for v in variants:
        field = "source.study" if isinstance(v.spec, EvalSpec) else "base.init_from"
        for where, pairs in checkpoints_read(v.spec).items():
            if where is not None:
                wanted.setdefault(where, {}).update({pair: field for pair in pairs})
    for where, pairs in wanted.items():
        store = Store.open(where, readonly=True)
        try:
            for (run, epoch), field in pairs.items():
                try:
                    checkpoint_file(store, run, epoch).verify()
                except (StoreError, ValueError) as err:
                    raise SpecError(f"{err}; restore it, or run the source study ({where}) again", file=file,
                                    field=field) from None
        finally:
            store.close()


@functools.lru_cache(maxsize=64)
def _stored_shapes(study: str, run: str) -> dict | None:
    """Parameter and buffer shapes of a stored source run's model (meta device), or None if unknown."""
    from ablab.store import Store
    from ablab.train.build import PartError, build_run, load_run_data

    store = Store.open(study, readonly=True)
    try:
        row = store.runs().set_index("run").spec.get(run)
    finally:
        store.close()
    if row is None:
        return None
    try:
        source = RunSpec.model_validate(row)
    except pydantic.ValidationError:  # stored by another version: the worker's restore says what differs
        return None
    try:
        parts = build_run(source, data=load_run_data(source), meta=True)
    except PartError:
        return None
    return {k: tuple(t.shape) for k, t in parts.model.state_dict().items()}


def _loss(spec: RunSpec):
    from ablab.registry import LOSSES

    return LOSSES.create(spec.loss)


def _add_estimate(estimate: Estimate, spec: RunSpec, params: int, buffers: int, facts: dict) -> None:
    tensors = len(facts["shapes"]) * (1 + _OPTIMIZER_SLOTS)
    per_checkpoint = 4 * (params * (1 + _OPTIMIZER_SLOTS) + buffers) + _CHECKPOINT_BASE + _TENSOR_FRAMING * tensors
    estimate.checkpoints += per_checkpoint * spec.record.checkpoints.count(facts["epochs"], spec.snapshot_epochs)
    last, every = facts["epochs"], spec.record.eval_every_epochs
    for epochs, size in facts["sizes"]:
        times = 1 if epochs == "last" else (len(epochs) if isinstance(epochs, list) else len(
            {e for e in range(last + 1) if e % every == 0} | {last}))
        estimate.predictions += times * size


def _outputs_per_evaluation(evaluators: list, default_splits: list[str], data, build_model) -> list[tuple[object, int]]:
    """(epochs, bytes stored per evaluation) of each evaluator that stores files: logits, labels (one file per
    split and epoch, however many evaluators store logits beside them), activations."""
    from ablab.train.evaluators import Sizing

    out, labelled = [], set()
    classification = data.task == "classification"
    for ev in evaluators:
        total = 0
        for split in ev.splits_for(default_splits):
            if split not in data.splits:
                continue
            sizing = Sizing(len(data.splits[split]), int(data.out_dim or 1), classification, tuple(data.in_shape),
                            build_model)
            size = ev.stored_bytes(sizing)
            if size and classification and ev.stores_labels():
                if (split, str(ev.epochs)) in labelled:  # the same labels file as an evaluator before it
                    size -= sizing.labels()
                labelled.add((split, str(ev.epochs)))
            total += size
        if total:
            out.append((ev.epochs, total))
    return out


def _unit_outputs(spec: EvalSpec, datasets: dict, models: dict) -> int:
    """Bytes a post-hoc unit's evaluators store once (ensemble and TTA logits, labels, activations)."""
    from ablab.registry import EVALUATORS

    first = spec.members[0].spec
    data = datasets[_key([first.data, first.corrupt])]
    def model():
        key = spec.members[0].run
        if key not in models:
            models[key] = _meta_model(first, data)
        return models[key]

    evaluators = [EVALUATORS.create(e) for e in spec.evaluators]
    return sum(size for _, size in _outputs_per_evaluation(evaluators, spec.eval_splits, data, model))


def _meta_model(spec: RunSpec, data):
    """The run's model on the meta device (shapes only), or None when it cannot be built."""
    from ablab.train.build import PartError, build_run

    try:
        return build_run(spec, data=data, meta=True).model
    except PartError:
        return None


def _unit_records(spec: EvalSpec) -> set[str]:
    from ablab.registry import EVALUATORS
    from ablab.validate_report import recorded_by

    return recorded_by([EVALUATORS.create(e) for e in spec.evaluators], spec.eval_splits, None, training=False)


def _check_unit(spec: EvalSpec, fail, datasets: dict, models: dict) -> None:
    """The unit's members fit together and each evaluator can run on their dataset and model."""
    from ablab.registry import EVALUATORS
    from ablab.train.build import load_run_data
    from ablab.train.evaluators import Evaluator
    from ablab.train.posthoc import check_members

    try:
        check_members(spec)
    except ValueError as err:
        raise fail(err, "members") from None
    first = spec.members[0].spec
    dkey = _key([first.data, first.corrupt])
    if dkey not in datasets:
        try:
            datasets[dkey] = load_run_data(first)
        except AblabError as err:
            raise fail(err, "source.study") from None
    for i, e in enumerate(spec.evaluators):
        try:
            EVALUATORS.create(e).check(datasets[dkey])
        except SpecError as err:
            raise fail(err, f"base.evaluators.{i}") from None
    for i, e in enumerate(spec.evaluators):
        evaluator = EVALUATORS.create(e)
        if type(evaluator).check_model is Evaluator.check_model:
            continue
        for member in spec.members:
            if member.run not in models:
                models[member.run] = _meta_model(member.spec, datasets[dkey])
            if models[member.run] is None:
                continue
            try:
                evaluator.check_model(models[member.run])
            except ValueError as err:
                raise fail(SpecError(f"{err} (run '{member.label}')"), f"base.evaluators.{i}") from None

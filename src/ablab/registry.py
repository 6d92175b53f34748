"""One registry per component kind: the name in a spec is the key is the label in the report.

A component in a spec is a name plus keyword parameters, mapped 1:1 onto the explicit keyword
parameters of the registered factory: ``REGISTRY.create({"name": n, **params}, **context)``.
Context arguments (``in_shape`` for a model, ``params`` for an optimizer …) come from the
engine, never from the spec.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import sys
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable

import pydantic

from ablab.errors import AblabError, SpecError, split_located


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str
    module: str = ""  # the module that registered it (whose package's source a run using it records)


def closest_names(name: str, known: list[str]) -> str:
    """A hint for an unknown name: the closest known one and the full list."""
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Known: {', '.join(sorted(known))}."


class Registry:
    """Named factories of one component kind, registered with a decorator at their definition."""

    def __init__(self, kind: str, context: tuple[str, ...] = (), hints: dict[str, str] | None = None):
        self.kind = kind
        self.context = context
        self.hints = hints or {}  # parameter -> how to supply it, shown when it is missing
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator: register ``factory`` under ``name``; the docstring's first line describes it."""

        def decorate(factory: Callable) -> Callable:
            old = self._entries.get(name)
            if old is not None and _definition(old.factory) != _definition(factory):  # a re-imported definition replaces
                raise RegistrationError(
                    f"{self.kind} '{name}' is registered twice: by {_origin(old.factory)} and by {_origin(factory)}; "
                    f"choose another name for yours (`ablab list {self.kind}` shows the names taken)")
            doc = description or (inspect.getdoc(factory) or "").strip().splitlines()
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            registrant = sys._getframe(1).f_globals.get("__name__", "")  # where the decorator was applied
            self._entries[name] = Entry(name, factory, text, registrant)
            return factory

        return decorate

    def _known(self) -> dict[str, Entry]:
        """The entries, the built-in components registered first (at the first lookup of any registry)."""
        if _builtin_loader is not None:
            load_builtins()
        return self._entries

    def __contains__(self, name: object) -> bool:
        return name in self._known()

    def list_names(self) -> list[str]:
        return sorted(self._known())

    def list_entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.list_names()]

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; an unknown name lists the known ones."""
        return self.get_entry(name).factory

    def get_entry(self, name: str) -> Entry:
        if name not in self._known():
            raise SpecError(self._unknown(name), field="name")
        return self._entries[name]

    def _unknown(self, name: str) -> str:
        """Why ``name`` names nothing: an import path is explained, a typo gets the closest name."""
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z_][\w.]*[:.][A-Za-z_][\w.]*", name):
            return (f"unknown {self.kind} '{name}': a component is named by its registered name, never by an "
                    f"import path. Register it in your module with @ablab.register_{self.kind}('{_short(name)}') "
                    f"and list the module under the study's 'imports:' (imports: [{_module_part(name)}]); "
                    "see docs/components.md")
        return f"unknown {self.kind} '{name}'.{closest_names(name, self.list_names())}"

    def name_type(self) -> Any:
        """An annotation for a parameter holding a name of this kind, checked during validation."""

        def check(name: str) -> str:
            if name not in self._known():
                raise ValueError(self._unknown(name))
            return name

        return Annotated[str, pydantic.AfterValidator(check)]

    def get_parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The spec-settable keyword parameters of ``name`` (context arguments left out)."""
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        params = _signature_of(target).parameters
        return {
            k: p
            for k, p in params.items()
            if k not in self.context and k != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def _type_hints(self, name: str) -> dict[str, Any]:
        factory = self.get(name)
        return _type_hints_of(factory.__init__ if inspect.isclass(factory) else factory)

    def validate(self, spec: str | dict[str, Any]) -> dict[str, Any]:
        """Check a component spec against the factory's signature; returns it with types coerced.

        Unknown or missing parameters, wrong types and a duration given in two units are
        ``SpecError``s whose field is relative to the component.
        """
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        if "name" not in spec:
            raise SpecError(f"a {self.kind} needs a 'name'.{closest_names('', self.list_names())}")
        name = spec.pop("name")
        if not isinstance(name, str):
            raise SpecError(f"must be a {self.kind} name (a string), got {name!r}", field="name")
        allowed = self.get_parameters(name)
        hints = self._type_hints(name)
        for key in spec:
            if key not in allowed:
                raise SpecError(
                    f"{self.kind} '{name}' has no parameter '{key}'."
                    + (closest_names(key, list(allowed)) if allowed else " It takes no parameters."),
                    field=key,
                )
        out: dict[str, Any] = {"name": name}
        quiet = _quiet_defaults(self.get(name))
        for key, p in allowed.items():
            if key in quiet and (key not in spec or _equal(spec[key], p.default)):
                continue  # a parameter added later, at its default: left out, so older run ids hold
            if key in spec:
                value = spec[key]
            elif p.default is inspect.Parameter.empty:
                hint = f" ({self.hints[key]})" if key in self.hints else ""
                raise SpecError(f"{self.kind} '{name}' needs parameter '{key}'{hint}", field=key)
            else:
                value = p.default  # filled in, so a run's canonical form names every setting
            out[key] = _coerce(key, value, hints.get(key))
        _check_duration_units(out)
        return out

    def create(self, spec: str | dict[str, Any], **context: Any) -> Any:
        """Build the component: ``factory(**context, **params)``."""
        spec = self.validate(spec)
        name = spec.pop("name")
        return self.get(name)(**context, **spec)


_builtin_loader: Callable[[], Any] | None = None


def set_builtin_loader(load: Callable[[], Any]) -> None:
    """How the built-in components get registered (``ablab/__init__.py`` sets it): called once, at the
    first lookup of any registry, so ``import ablab`` stays light (no torch) and the CLI has set its
    signal handlers before the components load."""
    global _builtin_loader
    _builtin_loader = load


def load_builtins() -> None:
    """Register the built-in components now; once per process (a lookup while they load sees those so far)."""
    global _builtin_loader
    load, _builtin_loader = _builtin_loader, None
    if load is None:
        return
    try:
        load()
    except BaseException:  # interrupted or failed: the next lookup tries again
        _builtin_loader = load
        raise


def quiet_default(*names: str) -> Callable[[Callable], Callable]:
    """Decorator (under ``register``): the parameters ``names``, added to a component after runs were stored,
    stay out of its canonical form while at their default (whose numbers are the old ones), so the run ids
    stored before they existed still name the same runs."""

    def mark(factory: Callable) -> Callable:
        factory.quiet_defaults = frozenset(names)  # type: ignore[attr-defined]
        return factory

    return mark


def _quiet_defaults(factory: Callable) -> frozenset:
    return getattr(factory, "quiet_defaults", frozenset())


def _equal(value: Any, default: Any) -> bool:
    """A spec value equal to a parameter's default (``0`` and ``0.0`` alike; never an error)."""
    try:
        return bool(value == default) and type(value) is not bool
    except Exception:  # noqa: BLE001  (an odd value is simply not the default)
        return False


class RegistrationError(AblabError, ValueError):
    """Two different components registered under one name of one kind."""


def _origin(factory: Callable) -> str:
    """Where a factory is defined: ``module.qualname``."""
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def _definition(factory: Callable) -> tuple[str, int]:
    """Where a factory is defined, to the line: a module imported again (a reload) defines the same ones."""
    code = getattr(factory, "__code__", None) or getattr(getattr(factory, "__init__", None), "__code__", None)
    return _origin(factory), getattr(code, "co_firstlineno", -1)


def _short(path: str) -> str:
    """``mymodels:Net`` → ``net``: a registered name suggested for an import path."""
    return re.split(r"[:.]", path)[-1].lower() or "mine"


def _module_part(path: str) -> str:
    """``mymodels:Net`` → ``mymodels``; ``pkg.models.Net`` → ``pkg.models``."""
    return path.split(":")[0] if ":" in path else path.rpartition(".")[0]


@functools.lru_cache(maxsize=None)
def _signature_of(target: Callable) -> inspect.Signature:
    return inspect.signature(target)


@functools.lru_cache(maxsize=None)
def _type_hints_of(target: Callable) -> dict[str, Any]:
    """A factory's annotations, resolved once per process (a run builds ~10 components; resolving and
    building validators anew took ~7 ms of a run's ~10 ms set-up, bench_loop's fixed cost)."""
    return typing.get_type_hints(target, include_extras=True)


@functools.lru_cache(maxsize=None)
def _cached_adapter(hint: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(hint)


def _adapter(hint: Any) -> pydantic.TypeAdapter:
    """The validator of an annotation, built once per process (an unhashable annotation: every time)."""
    try:
        return _cached_adapter(hint)
    except TypeError:
        return pydantic.TypeAdapter(hint)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Validate one parameter value against its annotation (pydantic, lax mode)."""
    if hint is None:
        return value
    try:
        return _adapter(hint).validate_python(value, strict=False)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        sub = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        got = "" if "(got" in msg or "unknown" in msg or str(value) in msg else f" (got {value!r})"
        field, msg = split_located(f"{key}.{sub}" if sub else key, msg)
        raise SpecError(msg + got, field=field) from None


def _check_duration_units(params: dict[str, Any]) -> None:
    """A duration is given in one unit: ``x_steps`` or ``x_epochs``, never both."""
    for key, value in params.items():
        if key.endswith("_steps") and value is not None:
            twin = key[: -len("_steps")] + "_epochs"
            if params.get(twin) is not None:
                raise SpecError(
                    f"duration given in two units: '{key}' and '{twin}'; give exactly one",
                    field=twin,
                )


DATASETS = Registry("dataset", hints={"path": "give it in the spec or on the command line: --set data.path=PATH"})
MODELS = Registry("model", context=("in_shape", "out_dim"))
NORMS = Registry("norm", context=("num_features", "dim"))
ACTIVATIONS = Registry("activation")
OPTIMIZERS = Registry("optimizer", context=("params",))
SCHEDULES = Registry("schedule", context=("total_steps", "steps_per_epoch"))
LOSSES = Registry("loss")
AUGMENTATIONS = Registry("augmentation", context=("dataset",))
PROBES = Registry("probe", context=("model",))
OBJECTIVES = Registry("objective", context=("setup",))
EVALUATORS = Registry("evaluator")
SAMPLERS = Registry("sampler", context=("labels",))
REPORT_SECTIONS = Registry("report_section")  # parts of the report page (ablab.report.sections)
ATTACKS = Registry("attack")  # adversarial attacks (ablab.train.attacks), nested in evaluators and objectives

ALL_REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (DATASETS, MODELS, NORMS, ACTIVATIONS, OPTIMIZERS, SCHEDULES, LOSSES, AUGMENTATIONS, PROBES,
              OBJECTIVES, EVALUATORS, REPORT_SECTIONS, ATTACKS, SAMPLERS)
}


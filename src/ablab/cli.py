"""The ``ablab`` command: run | validate | status | show | export | report | list.

Exit codes: 0 everything finished (done or diverged), 1 some run failed, 2 bad input (a spec, a
flag, or a path that is not what the command needs: ``--out`` naming a file, a folder without a
store, an empty ``ablab.db``), 74 I/O failure (EX_IOERR: a damaged ``ablab.db``, a read-only results
directory, a full disk; the message names the path and what to do; a rerun resumes), 130 interrupted
by Ctrl-C, 143 stopped by SIGTERM (after either, a rerun of the same command resumes; also when the
signal lands while the process exits after the command finished).

``status`` and ``report`` open the store read-only: they never change ``ablab.db`` (``report``
writes only its ``report/`` folder).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import math
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Iterator, Optional

from ablab.errors import AblabError, StoreIOError

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_IO_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 74, 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, the shell's code for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where Ctrl-C would be, so a stopped study is put back exactly as after Ctrl-C."""


# set by the SIGTERM handler: Ray's wait turns any exception its signal check meets into a plain
# KeyboardInterrupt (_raylet check_signals -> Status Interrupted), so the type alone can be lost
_sigterm_seen = threading.Event()


@contextlib.contextmanager
def _sigterm_as_interrupt(command_line: bool = False) -> Iterator[None]:
    """While the command runs, SIGTERM raises ``Terminated`` in this process (the previous handler after;
    for the ``command_line``, a late signal's exit code: ``_note_late_signals``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    driver = os.getpid()

    def on_sigterm(signum, frame) -> None:
        if os.getpid() != driver:  # a forked worker inherits the handler: it dies, the driver cleans up
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _sigterm_seen.set()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _sigterm_seen.clear()
    try:
        yield
    finally:
        if command_line:
            _note_late_signals()
        else:
            signal.signal(signal.SIGTERM, previous)


@dataclass
class _LateExit:
    """The command line's exit: armed once its command returned, the code it returned and the signals after."""

    armed: bool = False
    code: int = 0
    signals: list[int] = field(default_factory=list)


_late = _LateExit()


def _note_late_signals() -> None:
    """From the command's return to the process's end, Ctrl-C or SIGTERM is noted, not obeyed: Python's
    exit work (joining workers, removing temporary folders) goes on, then ``_exit_with_late_signal``
    ends the process with 130 / 143 (was: the signal killed it mid-exit, exit -2 / -15)."""

    def note(signum, frame) -> None:
        _late.signals.append(signum)

    _late.armed = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)


def _exit_with_late_signal() -> None:
    """Python's last exit hook (registered when this module loads, before any other: hooks run last
    first): a signal noted after the command returned ends the process with 128 + its number, unless
    the command had already returned 130 / 143 for a signal that stopped it."""
    if not _late.armed:
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # from here the exit code is the one decided below
    if _late.signals and _late.code not in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + _late.signals[0])


atexit.register(_exit_with_late_signal)


def _interrupted(stop: KeyboardInterrupt, what: str) -> int:
    """One line on stderr for Ctrl-C or SIGTERM; the exit code that tells them apart."""
    terminated = isinstance(stop, Terminated) or _sigterm_seen.is_set()
    print(f"\n{'terminated (SIGTERM)' if terminated else 'interrupted'}{what}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
# OS errors that are the disk's or the permissions' (not a bug of ours): reported as I/O failures
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablab", description="Controlled ablation studies of deep-learning training.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every run of a study that the store does not hold yet")
    run.add_argument("spec", help="study YAML file")
    run.add_argument("--out", help="results directory (default: results/<study name>)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1: in this process)")
    run.add_argument("--threads", type=int, help="CPU threads per run (default: cores // workers, "
                     "OMP_NUM_THREADS standing for the cores where it is set); "
                     "CPU results are bitwise reproducible for the same thread count")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local processes, or Ray (a private local instance, or a cluster with --address)")
    run.add_argument("--address", help="Ray cluster to join, e.g. HEAD_IP:6379 or 'auto' (default: start a private local instance)")
    run.add_argument("--max-retries", type=int, default=2, help="Ray: retries of a run whose worker died (default 2)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                     help="override a base setting by dotted path, e.g. --set data.path=/data/cifar10 (repeatable)")
    run.add_argument("--report", action="store_true", help="write the report when the study finishes")
    run.add_argument("--replace", action="store_true", help="the results directory holds a study of another name: "
                     "make this one its study (the other stays readable with status --study NAME)")
    _limits(run)

    val = sub.add_parser("validate", help="check a study spec, count its runs (and those stored), estimate the "
                         "cost; writes nothing")
    val.add_argument("spec")
    val.add_argument("--out", help="results directory to count stored runs in (default: results/<study name>)")
    val.add_argument("--no-timing", action="store_true",
                     help="skip timing training steps of the first run (no cost estimate)")
    val.add_argument("--workers", type=int, default=1, help="workers the estimate assumes (as for ablab run)")
    val.add_argument("--threads", type=int, help="CPU threads per run for the measured steps (default: as for run)")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    _limits(val)

    st = sub.add_parser("status", help="done / running / failed / diverged counts, per run")
    st.add_argument("results", help="study results directory, or the study's spec file (results/<name>)")
    st.add_argument("--failed", action="store_true", help="also print each failed run's stored traceback")

    sh = sub.add_parser("show", help="one run: spec, status, final metrics, error")
    sh.add_argument("run", help="run id (or its unique start), as `ablab status` lists it")
    sh.add_argument("results", nargs="?", default=None,
                    help="study results directory or spec file (default: the one study under results/ holding it)")

    ex = sub.add_parser("export", help="every metric as CSV or Parquet, or TensorBoard event files")
    ex.add_argument("results", help="study results directory, or the study's spec file")
    ex.add_argument("--format", choices=["csv", "parquet"], default="csv", help="table format (default csv)")
    ex.add_argument("--out", help="table file (default: <results>/export/metrics.<format>)")
    ex.add_argument("--tensorboard", metavar="OUTDIR", help="write TensorBoard event files, one folder per run, "
                    "instead of a table (tensorboard --logdir OUTDIR)")
    st.add_argument("--study", help="a study this directory held before --replace (default: the current one)")

    rep = sub.add_parser("report", help="write report/index.html with figures and tables; print the table")
    rep.add_argument("results", help="study results directory, or the study's spec file (results/<name>)")

    ls = sub.add_parser("list", help="every registered component, by kind")
    ls.add_argument("kind", nargs="*", help="only these kinds (dataset, model, optimizer, …)")
    ls.add_argument("--params", action="store_true", help="each component's parameters, with their types and defaults")
    ls.add_argument("--spec", help="also the components a study's imports: registers (marked with their module)")
    return p


def _limits(p: argparse.ArgumentParser) -> None:
    from ablab.spec import MAX_RUNS
    from ablab.validate import DEFAULT_MAX_ARTIFACT_GB

    p.add_argument("--max-artifact-gb", type=float, default=DEFAULT_MAX_ARTIFACT_GB,
                   help=f"refuse a study whose checkpoints and predictions would exceed this (default {DEFAULT_MAX_ARTIFACT_GB:g})")
    p.add_argument("--max-runs", type=int, default=MAX_RUNS, help=f"refuse a study of more runs (default {MAX_RUNS})")


def _check_limits(args: argparse.Namespace) -> None:
    """``--max-artifact-gb`` a positive finite number, ``--max-runs`` at least 1 (none of them turns a guard off)."""
    if not (math.isfinite(args.max_artifact_gb) and args.max_artifact_gb > 0):
        raise AblabError(f"--max-artifact-gb must be a positive finite number, got {args.max_artifact_gb:g}")
    if args.max_runs < 1:
        raise AblabError(f"--max-runs must be at least 1, got {args.max_runs}")


def _load(spec: str, overrides: list[str], max_artifact_gb: float | None = None, max_runs: int | None = None,
          local_devices: bool = True):
    from ablab.spec import MAX_RUNS, expand, load_study
    from ablab.store import Store
    from ablab.validate import DEFAULT_MAX_ARTIFACT_GB, check_variants

    study = load_study(spec, overrides)
    variants = expand(study, file=spec, max_runs=max_runs or MAX_RUNS,
                      open_stored=lambda path: Store.open(path, readonly=True))
    estimate = check_variants(variants, file=spec, max_artifact_gb=max_artifact_gb or DEFAULT_MAX_ARTIFACT_GB,
                              local_devices=local_devices, study=study)
    return study, variants, estimate


def cmd_run(args: argparse.Namespace) -> int:
    from ablab.execute import run_study

    if args.workers < 1:
        raise AblabError(f"--workers must be at least 1, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        raise AblabError(f"--threads must be at least 1, got {args.threads}")
    cores = os.cpu_count() or 1
    if args.workers > cores and not args.address:  # a cluster's nodes have their own cores
        print(f"note: --workers {args.workers} is more than this machine's {cores} cores; the runs share them",
              file=sys.stderr)
    if args.max_retries < 0:
        raise AblabError(f"--max-retries must be 0 or more, got {args.max_retries}")
    if args.executor == "ray":
        from ablab.execute.ray_executor import import_ray

        import_ray()  # says how to install Ray before anything runs
    elif args.address:
        raise AblabError("--address needs --executor ray")
    _check_limits(args)
    # everything validated before anything is written
    on_cluster = args.executor == "ray" and bool(args.address or os.environ.get("RAY_ADDRESS"))
    study, variants, _ = _load(args.spec, args.overrides, args.max_artifact_gb, args.max_runs,
                               local_devices=not on_cluster)  # a cluster's nodes have their own devices
    out = Path(args.out) if args.out else Path("results") / study.name
    _check_existing_store(out)
    try:
        summary = run_study(study, args.spec, variants, out, workers=args.workers, executor=args.executor, threads=args.threads,
                            address=args.address, max_retries=args.max_retries, replace=args.replace)
    except KeyboardInterrupt as stop:
        return _interrupted(stop, f"; run the same command again to resume ({out})")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    print(f"{study.name}: {counts} -> {out}")
    if args.report:
        _print_report(out)
    else:
        print(f"next: ablab report {out}")
    return EXIT_OK if summary.complete else EXIT_FAILED_RUNS


def _check_existing_store(out: Path) -> None:
    """A store already in ``out`` is opened to read first: a foreign or damaged one is refused before any file is written."""
    from ablab.store import DB_NAME, Store, require_results_path

    require_results_path(out)
    db = out / DB_NAME
    if db.is_file() and db.stat().st_size > 0:
        Store.open(out, readonly=True).close()


def cmd_validate(args: argparse.Namespace) -> int:
    _check_limits(args)
    study, variants, estimate = _load(args.spec, args.overrides, args.max_artifact_gb, args.max_runs)
    labels = sorted({v.label for v in variants}, key=[v.label for v in variants].index)
    if study.post_hoc:
        from ablab.spec.models import member_kind_text

        kinds = [member_kind_text(k) for k in study.unit_kinds]
        if len(kinds) == 1:
            units = len(variants) // max(1, len(labels))
            print(f"{args.spec}: post-hoc study '{study.name}' is valid: {len(variants)} units = {len(labels)} variants "
                  f"× {units} units ({kinds[0]}) of stored runs in {study.source.study}")
        else:
            print(f"{args.spec}: post-hoc study '{study.name}' is valid: {len(variants)} units in {len(labels)} "
                  f"variants ({', '.join(kinds)}) of stored runs in {study.source.study}")
    else:
        print(f"{args.spec}: study '{study.name}' is valid: {len(variants)} runs = {len(labels)} variants × "
              f"{len(variants) // max(1, len(labels))} replicates")
    stored = _stored_ids(Path(args.out) if args.out else Path("results") / study.name)
    to_do = [v for v in variants if v.id not in stored]
    print(f"  stored: {len(variants) - len(to_do)} of {len(variants)} runs already have a final result; "
          f"{len(to_do)} to run")
    if estimate.total:
        print(f"  artifacts: about {_size(estimate.total)} (checkpoints {_size(estimate.checkpoints)}, "
              f"evaluator outputs {_size(estimate.predictions)})")
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise AblabError("--workers and --threads must be at least 1")
    from ablab.execute import default_threads

    threads = args.threads or default_threads(args.workers)
    if not study.post_hoc and to_do:
        _print_packing(study, to_do, threads, estimate.steps, not args.no_timing, args.workers)
    if not study.post_hoc and to_do and not args.no_timing:
        print("  " + _cost_line(to_do, estimate.steps, args.workers, threads))
    for label in labels:
        print(f"  {label}")
    return EXIT_OK


def _print_packing(study, to_do: list, threads: int, steps: Optional[dict] = None, timing: bool = False,
                   workers: int = 1) -> None:
    """The packing plan (``execute.pack``): how many runs train packed, and each family that cannot, with why;
    with ``timing`` the packed runs' cost, from a measured packed step of the first pack."""
    from ablab.execute.packing import plan_packs

    plan = plan_packs(to_do, study.execute.pack, "local", threads, workers)
    print(f"  {plan.summary()} (execute.pack: {study.execute.pack})")
    for note in plan.notes:
        print(f"    {note}")
    if timing and plan.packs:
        print("    " + _packed_cost_line(plan.packs, steps or {}, threads))


def _packed_cost_line(packs: list, steps: dict[str, int], threads: int) -> str:
    """The packed runs' training steps × the measured time per run-step of the first pack (its packed step ÷ R)."""
    from ablab.train.packed import packed_step_seconds

    first = packs[0]
    try:
        seconds = packed_step_seconds([v.spec for v in first], threads=threads)
    except Exception as err:  # noqa: BLE001 - an estimate: the study itself validated, so say why and go on
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"packed cost: not measured ({reason})"
    per_run = seconds / len(first)
    total = sum(steps.get(v.id, 0) for pack in packs for v in pack)
    return (f"packed cost: about {_duration(total * per_run)} of training for the {sum(map(len, packs))} packed runs "
            f"= {total:,} run-steps × {per_run * 1e3:.3g} ms (measured: a packed step of {len(first)} replicas of "
            f"'{first[0].label}' takes {seconds * 1e3:.3g} ms, {threads} thread(s); evaluation not included; the cost "
            "line below counts every run as if it ran alone)")


def _stored_ids(folder: Path) -> set[str]:
    """Ids of the runs in ``folder``'s store with a final result (done, diverged); none without a store."""
    from ablab.store import FINAL, Store

    if not (folder / "ablab.db").is_file():
        return set()
    store = Store.open(folder, readonly=True)
    try:
        runs = store.runs(all_runs=True)
    finally:
        store.close()
    return set(runs.loc[runs["status"].isin(FINAL), "run"])


def _cost_line(to_do: list, steps: dict[str, int], workers: int, threads: int) -> str:
    """Training steps still to run × the measured time of one step of the first run to do (÷ workers), with
    the range the fastest and slowest block of measured steps give, and the machine's load when measured."""
    from ablab import step_time

    first = to_do[0].spec
    try:
        t = step_time.measure_step_seconds(first, threads=threads)
    except Exception as err:  # noqa: BLE001 - an estimate: the study itself validated, so say why and go on
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"cost: not measured ({first.device}: {reason}); --no-timing skips the measurement"
    total = sum(steps.get(v.id, 0) for v in to_do)
    wall = f", about {_duration(total * t.seconds / workers)} with {workers} workers" if workers > 1 else ""
    return (f"cost: about {_duration(total * t.seconds)} of training ({_duration(total * t.low)} to "
            f"{_duration(total * t.high)}) = {total:,} steps × {t.seconds * 1e3:.3g} ms{wall} (measured: {t.steps} "
            f"steps of '{to_do[0].label}' after {t.warmup} warm-up steps, on {t.device}, {threads} thread(s) per "
            f"run, {t.load_text()}; evaluation not included)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def cmd_status(args: argparse.Namespace) -> int:
    from ablab.cli_inspect import failed_runs_text, results_dir
    from ablab.store import Store

    args.results = str(results_dir(args.results))
    store = Store.open(args.results, readonly=True)
    try:
        runs = store.runs(study=args.study)
        study = store.study(args.study)
        names = store.study_names()
        disk = store.artifact_bytes()
        n_artifacts = len(store.artifacts())
    finally:
        store.close()
    counts = runs["status"].value_counts().to_dict()
    which = f"replaced study '{study['name']}' (current: '{names[0]}')" if args.study else f"study '{study['name']}'"
    print(f"{which} in {args.results}: {len(runs)} runs: "
          + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed", "running", "pending")))
    if not args.study and len(names) > 1:
        print(f"replaced studies: {', '.join(names[1:])} (ablab status {args.results} --study NAME)")
    print(f"artifacts: {n_artifacts} files, {_size(disk)} on disk (all studies)")
    width = max([len(lbl) for lbl in runs["label"]] + [7])
    print(f"{'run':<16}  {'variant':<{width}}  {'rep':>3}  {'status':<8}  {'time':>7}")
    for r in runs.itertuples():
        t = f"{r.duration_s:.1f}s" if r.duration_s == r.duration_s and r.duration_s is not None else ""
        status = r.status
        if status == "running":
            status = "running (or interrupted)"
        print(f"{r.run:<16}  {r.label:<{width}}  {r.replicate:>3}  {status:<8}  {t:>7}")
    if args.failed:
        print()
        print(failed_runs_text(runs))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from ablab.cli_inspect import find_run, results_dir, show_text
    from ablab.store import Store

    folders = [results_dir(args.results)] if args.results else sorted(p.parent for p in Path("results").glob("*/ablab.db"))
    for folder in folders:
        store = Store.open(folder, readonly=True)
        try:
            runs = store.runs()
            if args.results is None and not runs["run"].str.startswith(args.run).any():
                continue
            run = find_run(runs, args.run)
            print(show_text(run, store.metrics(run["run"])))
            return EXIT_OK
        finally:
            store.close()
    raise AblabError(f"no run '{args.run}' in any study under results/; give the results directory")


def cmd_export(args: argparse.Namespace) -> int:
    from ablab.cli_inspect import results_dir
    from ablab.export import export_table, export_tensorboard
    from ablab.store import Store

    folder = results_dir(args.results)
    store = Store.open(folder, readonly=True)
    try:
        if args.tensorboard:
            files = export_tensorboard(store, Path(args.tensorboard))
            print(f"{len(files)} runs -> {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
            return EXIT_OK
        out = Path(args.out) if args.out else folder / "export" / f"metrics.{args.format}"
        if out.is_dir():
            raise AblabError(f"--out {out} is a directory; give a file name")
        rows = export_table(store, args.format, out)
    finally:
        store.close()
    print(f"{rows} metric values -> {out}")
    return EXIT_OK


def _print_report(results: str | Path) -> None:
    from ablab.report import write_report
    from ablab.store import Store

    from ablab.export import require_folder

    require_folder(Path(results) / "report", "ablab report writes its report into this folder: move the file away")
    store = Store.open(results, readonly=True)
    try:
        result = write_report(store)
    finally:
        store.close()
    print(result.table_text)
    print(f"report: {result.path}")


def cmd_report(args: argparse.Namespace) -> int:
    from ablab.cli_inspect import results_dir

    args.results = str(results_dir(args.results))
    _print_report(args.results)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from ablab.plugins import load_components
    from ablab.registry import closest_names

    registries = load_components()
    if args.spec:
        from ablab.spec import import_spec_modules

        import_spec_modules(args.spec)
    kinds = args.kind or list(registries)
    for kind in kinds:
        if kind not in registries:
            raise AblabError(f"unknown component kind '{kind}'.{closest_names(kind, list(registries))}")
    for kind in kinds:
        reg = registries[kind]
        print(f"{kind}:")
        width = max((len(n) for n in reg.list_names()), default=0)
        for entry in reg.list_entries():
            own = "" if not entry.module or entry.module.split(".")[0] == "ablab" else f"  [{entry.module}]"
            print(f"  {entry.name:<{width}}  {entry.description}{own}")
            if args.params:
                for line in _parameter_lines(reg, entry.name):
                    print(f"      {line}")
    return EXIT_OK


def _parameter_lines(reg, name: str) -> list[str]:
    """``name: type = default`` per spec-settable parameter (``required`` where there is no default)."""
    import inspect

    params = reg.get_parameters(name)
    if not params:
        return ["(no parameters)"]
    lines = []
    for key, p in params.items():
        kind = f": {_annotation_text(p.annotation)}" if p.annotation is not inspect.Parameter.empty else ""
        value = "  (required)" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"{key}{kind}{value}")
    return lines


def _annotation_text(annotation) -> str:
    """A parameter's type as written in its source (annotations are strings under postponed evaluation;
    a module without it gives objects: a class by its name, a typing form as typing writes it)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status, "show": cmd_show, "export": cmd_export,
            "report": cmd_report, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    """The command; without ``argv`` it is the process's command line (``ablab``, ``python -m ablab``),
    whose exit a late Ctrl-C or SIGTERM cannot cut short (``_note_late_signals``)."""
    with _sigterm_as_interrupt(command_line=argv is None):
        _late.code = code = _command(argv)
        return code


def _command(argv: list[str] | None) -> int:
    """Parse ``argv`` and run its command; every failure is one line and its exit code."""
    args = None
    try:
        args = _parser().parse_args(argv)  # the parser imports the registries (torch): seconds
        from ablab.train.compute import keep_freed_memory

        keep_freed_memory()  # runs trained in this process (and validate's timing) skip the page faults
        return COMMANDS[args.command](args)
    except StoreIOError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_IO_ERROR
    except AblabError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt as stop:  # before anything was written (a run catches its own)
        return _interrupted(stop, "")
    except (OSError, sqlite3.DatabaseError) as err:
        # a failure the store did not see coming (a damaged page met while reading, report/ on a full disk)
        # or a path that is not what the command needs (a file where it writes a folder, a looping link)
        from ablab.store.errors import io_error, is_bad_path, is_io_failure

        bad_path = is_bad_path(err)
        if not bad_path and (not is_io_failure(err) or (isinstance(err, OSError) and err.errno not in _DISK_ERRNOS)):
            raise
        where = (getattr(err, "filename", None) or getattr(args, "results", None) or getattr(args, "out", None)
                 or ".")
        print(f"error: {io_error(where, err)}", file=sys.stderr)
        return EXIT_BAD_INPUT if bad_path else EXIT_IO_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""Ray executor: each run is a Ray task; workers return results and the driver alone writes the store.

Without an address it starts a private local Ray instance (dashboard off); with one it joins an
existing cluster (``ray start --head`` on the head node, ``ray start --address=HEAD:6379`` on the
others). The same spec gives the same numbers as the local executor for the same threads per run.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Any

from ablab.errors import AblabError
from ablab.execute.local import finish_run, start_run
from ablab.execute.progress import ProgressView
from ablab.spec import Resources, Variant
from ablab.store import Store
from ablab.train.result import RunResult

INSTALL_HINT = "the Ray executor needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"


def import_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AblabError(INSTALL_HINT) from None
    return ray


def _train_task(spec_json: str, run_id: str, threads: int) -> RunResult:
    """Runs on a Ray worker: the same code path as a local worker process."""
    import torch

    from ablab.spec import RunSpec
    from ablab.train.loop import train

    torch.set_num_threads(threads)
    return train(RunSpec.model_validate_json(spec_json), run_id=run_id)


def run_ray(
    store: Store,
    todo: list[Variant],
    view: ProgressView,
    *,
    workers: int,
    threads: int,
    resources: Resources,
    address: str | None = None,
    max_retries: int = 2,
) -> None:
    """Train ``todo`` as Ray tasks, at most ``workers`` in flight; a task whose worker died
    ``max_retries`` + 1 times is stored as failed with the reason."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # a running instance saves ~5 s of start-up
    started_here = not ray.is_initialized()
    if started_here:
        common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **common)
        else:
            # a private instance on this machine, bound to localhost
            ray.init(
                address="local", num_cpus=workers * max(1, math.ceil(resources.cpus)),
                num_gpus=_local_gpus() if resources.gpus > 0 else 0, _node_ip_address="127.0.0.1", **common,
            )
    remote = ray.remote(_train_task).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=max_retries, retry_exceptions=False
    )
    pending = collections.deque(todo)
    inflight: dict[Any, Variant] = {}
    try:
        while pending or inflight:
            while pending and len(inflight) < workers:
                v = pending.popleft()
                start_run(store, view, v)
                inflight[remote.remote(v.spec.canonical_json(), v.id, threads)] = v
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                v = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:  # worker died (retries used up) or task error
                    result = RunResult(v.id, "failed", error=f"Ray task failed after {max_retries} retries: "
                                       f"{type(err).__name__}: {err}")
                finish_run(store, view, v, result)
    except KeyboardInterrupt:  # run_study marks the runs in flight pending
        if not started_here:
            # Ray belongs to the caller: stop our tasks. (Where we started Ray, shutdown kills them;
            # ray.cancel(force=True) racing a task's completion aborts the driver in Ray 2.60.)
            for ref in inflight:
                ray.cancel(ref)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0

"""Dask clusters for sweeps: connect to a scheduler or start a local cluster, share CPUs.

:func:`dysonsgd.runs.sweep.run_sweep` takes the client of :func:`dask_client` and submits one
task per pack; :func:`worker_threads` sizes the threads of a task on its worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from dysonsgd._checks import InputError

__all__ = ["dask_client", "slots_by_host", "worker_threads"]

#: how long ``--scheduler`` tries to reach the scheduler
CONNECT_TIMEOUT = "20s"
#: seconds ``--scheduler`` waits for a first worker before planning packs without one
WAIT_FOR_WORKERS_S = 120


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, cluster: str | None = None,
                workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (``tcp://HOST:PORT``), or to a new
    ``LocalCluster`` (``cluster='local'``, ``workers`` processes of one thread each); ``None``
    when neither is given (in-process)."""
    if scheduler and cluster:
        raise InputError("scheduler: give either --scheduler or --cluster, not both")
    if cluster not in (None, "local"):
        raise InputError(f"cluster must be 'local', got {cluster!r}")
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    if not scheduler and not cluster:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise InputError(f"scheduler: cannot connect to {scheduler!r} ({exc})") from None
        with client:
            try:  # pack sizes depend on the workers: give the first one a moment to join
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            except TimeoutError:  # tasks wait in the scheduler's queue for workers
                pass
            yield client
        return
    n = workers or max(1, (os.cpu_count() or 1) // 2)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, Client(lc) as client:
        yield client


def slots_by_host(client) -> dict[str, int]:
    """Worker threads per host of a client's cluster (tasks on one host share its CPUs)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed
        info = client.scheduler_info()
    slots: dict[str, int] = {}
    for w in info.get("workers", {}).values():
        slots[w["host"]] = slots.get(w["host"], 0) + int(w.get("nthreads", 1))
    return slots


def worker_threads(slots_by_host: dict[str, int] | None) -> int | None:
    """Threads for a task on a dask worker: this host's CPUs shared among its worker slots
    (numba would otherwise start one thread per CPU in every worker)."""
    if slots_by_host is None:
        return None
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        host = get_address_host(get_worker().address)
    except (ImportError, ValueError):
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(1, slots_by_host.get(host, 1)))

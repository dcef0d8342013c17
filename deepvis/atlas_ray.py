"""Running an atlas's shards on Ray (an optional extra: ``pip install 'deepvis[ray]'``).

Conventions
-----------
* ``address``: ``"auto"`` joins the cluster ``ray start`` made on this machine, else starts a local Ray with
  this machine's CPUs (no dashboard); any other string is a cluster's address (``ray://host:10001`` or
  ``host:6379``).  A Ray this process already joined is used as it is.
* **Workers are actors**, each building the model once from the picklable ``loader`` (on a GPU where the
  cluster has them: one per actor; else one CPU and one torch thread each), and checking it is the driver's
  model (the hash of its weights).  An actor that dies is restarted by Ray and its shard retried
  (``max_restarts``, ``max_task_retries``); the driver counts each shard once.
* The images are read by the workers: on a cluster the collection's paths must be readable on every node
  (shared storage).  The driver receives only each shard's records.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Generator, Sequence

from deepvis.errors import DeepvisError

RESTARTS = 4  # times Ray may restart one worker (and retry its shard) before the atlas fails


class RayError(DeepvisError):
    """Ray is missing or cannot be reached; the message is one line."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError("Ray is not installed: pip install 'deepvis[ray]', or run without --ray") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> str | None:
    """Why ``host:port`` (or ``ray://host:port``) cannot be reached by TCP, or None when it can: Ray itself
    retries an address that is not there for minutes."""
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        return "give it as host:port or ray://host:port"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def connect(address: str) -> None:
    """Join Ray at ``address`` (module docstring) unless this process already has; a one-line
    :class:`RayError` when it cannot be reached."""
    ray = _ray()
    if ray.is_initialized():
        return
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address != "auto":
        why = _reachable(address)
        if why is not None:
            raise RayError(f"cannot reach Ray at {address!r}: {why}")
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **options)
            except ConnectionError:  # no cluster started here: a local one
                ray.init(num_cpus=os.cpu_count(), **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        raise RayError(f"cannot reach Ray at {address!r}: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}") from None


def _worker_class(ray, gpus: float):
    @ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS)
    class ShardWorker:
        """Holds the model once; runs jobs on it: ``work(model, *args)`` (a shard's records, a batch of units)."""

        def __init__(self, loader: Callable) -> None:
            import torch

            if not gpus:
                torch.set_num_threads(1)  # one CPU per actor: the actors share the machine's cores
            self.loaded = loader()

        def model_key(self) -> str:
            from deepvis.collection import model_key

            return model_key(self.loaded)

        def run(self, work: Callable, number: int, *args) -> tuple[int, object]:
            return number, work(self.loaded, *args)

    return ShardWorker


def run_jobs(loader: Callable, key: str, work: Callable, jobs: Sequence[tuple], address: str,
             workers: int | None = None) -> Generator[tuple, None, None]:
    """Each job's ``(number, work(model, *rest))`` as a worker finishes it (any order): ``jobs`` are
    ``(number, *rest)``; ``workers`` actors (default: one per GPU of the cluster, else one per CPU), each with
    the model ``loader()`` builds, checked against ``key`` (the driver's weights hash)."""
    if not jobs:
        return
    connect(address)
    ray = _ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = workers or gpus or max(1, int(resources.get("CPU", 1)))
    count = max(1, min(count, len(jobs)))
    Worker = _worker_class(ray, 1 if gpus else 0)
    actors = [Worker.remote(loader) for _ in range(count)]
    try:
        keys = ray.get([a.model_key.remote() for a in actors])
        if any(other != key for other in keys):
            raise RayError(f"a Ray worker built another model ({next(o for o in keys if o != key)}, not {key}); "
                           f"every node needs the same weights")
        pool = ray.util.ActorPool(actors)
        for job in jobs:
            pool.submit(lambda actor, args: actor.run.remote(work, *args), tuple(job))
        while pool.has_next():
            try:
                yield pool.get_next_unordered()
            except ray.exceptions.RayActorError as error:
                raise RayError(f"a Ray worker failed more than {RESTARTS} times: {error}") from None
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def worker_pids() -> list[int]:
    """Process ids of this machine's live shard workers (Linux: Ray names a worker's process after its actor
    class); for the tests and the bench that kill one."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ShardWorker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found

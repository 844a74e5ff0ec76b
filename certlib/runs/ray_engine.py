"""`python -m certlib run --engine ray`: a sweep's missing runs on a Ray cluster (docs/scale-out.md, design §16).

One actor per device holds the model, loaded once (a registry model from the node's own weights; an uploaded
TorchScript model from its bytes, shipped once through the object store and run in the node's sandbox). The driver
pulls runs from the plan, gives each idle actor the next one (with its prepared input), and is the only writer of
the SQLite store: each result is committed the moment it arrives, so the plan's skip-what-is-stored makes any re-run
resume. A worker that dies costs only its in-flight runs: they go back to the queue and run on another actor (Ray
restarts the dead one where it can). A run's counts depend only on its config and its input (copy j of the noise
is a function of (seed, stream, j)), so where it ran does not change them.

Ray is imported only here, and only when this engine is used: `--engine local` needs no Ray at all.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from certlib.errors import CertlibError
from certlib.runs.store import Store, counts_from_bytes, library_versions

MAX_ATTEMPTS = 4           # a run whose actor died this many times is reported, not retried forever
PREFETCH = 2               # runs queued per actor, so an actor never waits for the driver's commit
START_TIMEOUT_S = 300      # actors not placed by then: the cluster lacks what was asked for


@dataclass(frozen=True)
class ModelRecipe:
    """How a worker gets the driver's model: a registry key on its own disk, or TorchScript bytes."""

    key: str
    device: str
    precision: str
    weights_sha256: str
    torchscript: object = None            # ray.ObjectRef of the file's bytes, for a model file (any format)
    input_shape: tuple[int, int, int] | None = None
    name: str = ""
    architecture: str | None = None       # of a .safetensors file
    class_names: tuple[str, ...] | None = None


def import_ray():
    try:
        import ray
    except ImportError:
        raise CertlibError("--engine ray needs the `ray` package: pip install 'ray==2.60.0' (it is in "
                           "requirements.txt); --engine local needs nothing more") from None
    return ray


class SweepWorker:
    """The actor: one model, loaded once; runs sweep runs given as (config JSON, prepared input)."""

    def __init__(self, recipe: ModelRecipe, threads: int | None, versions: tuple) -> None:
        # A constructor that raises would be restarted by Ray forever (max_restarts=-1): keep the error instead, and
        # report it through `where` (the driver's first call) and every `run`.
        self.model, self.error = None, None
        try:
            self._load(recipe, threads, versions)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _load(self, recipe: ModelRecipe, threads: int | None, versions: tuple) -> None:
        import torch

        from certlib.models import registry as models
        from certlib.runs import store, sweep  # noqa: F401  (sweep imported here, not in the first run)

        if threads:
            torch.set_num_threads(threads)
        if tuple(sorted(store.library_versions().items())) != tuple(versions):
            raise CertlibError(f"the worker on {_node()} runs other library versions than the driver "
                               f"({dict(store.library_versions())} vs {dict(versions)}): install the same "
                               "certexplorer and requirements on every node")
        if recipe.torchscript is not None:
            import ray

            from certlib.models import formats as model_formats

            self.model = model_formats.load_model(ray.get(recipe.torchscript), architecture=recipe.architecture,
                                                  input_size=recipe.input_shape, class_names=recipe.class_names,
                                                  name=recipe.name)
        else:
            self.model = models.load_model(recipe.key, device=recipe.device, precision=recipe.precision)
        if self.model.weights_sha256 != recipe.weights_sha256:
            raise CertlibError(f"the weights of {recipe.key} on {_node()} differ from the driver's "
                               f"({self.model.weights_sha256[:12]} vs {recipe.weights_sha256[:12]})")

    def run(self, config_json: str, x: np.ndarray, batch_size: int | None) -> tuple[str, bytes, float]:
        import torch

        from certlib.runs import store, sweep

        if self.error is not None:
            raise CertlibError(f"this worker could not start: {self.error}")

        config = store.config_from_dict(json.loads(config_json))
        start = time.perf_counter()
        counts = sweep.sample_run(self.model, sweep.PlannedRun(config, torch.from_numpy(x), ""), batch_size)
        return config.key, store.counts_to_bytes(counts, x), time.perf_counter() - start

    def where(self) -> dict:
        import torch

        return {"node": _node(), "pid": os.getpid(), "threads": torch.get_num_threads(), "error": self.error}


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:          # outside Ray (a unit test calling the class directly)
        return "this process"


def connect(address: str | None, **init_kwargs) -> None:
    """ray.init to an existing cluster ("auto", "HOST:PORT", "ray://…") or, without an address, a new local one."""
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False, **init_kwargs)
    except ConnectionError as exc:
        raise CertlibError(f"--address {address}: no Ray cluster there ({exc}); start one with `ray start --head` "
                           "or leave --address out to run Ray on this machine") from None


def plan_actors(device: str, actors: int | None, threads: int | None) -> tuple[int, dict, int | None]:
    """(how many actors, their resource request, torch threads each) for the connected cluster: one per GPU for
    CUDA, else one per node (or `actors`), each holding an equal share of the cluster's CPUs."""
    ray = import_ray()
    resources = ray.cluster_resources()
    if device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if gpus == 0:
            raise CertlibError("--device cuda: the Ray cluster has no GPUs")
        count = actors or gpus
        return count, {"num_gpus": 1, "num_cpus": 1}, threads
    alive = [n for n in ray.nodes() if n.get("Alive")]
    count = actors or max(1, len(alive))
    total = int(resources.get("CPU", 1))
    if count > total:
        raise CertlibError(f"--actors {count}: the Ray cluster has {total} CPU{'s' if total != 1 else ''}, so at most "
                           f"{total} CPU actors fit")
    # an equal share of the cluster's CPUs, but never more than one node has: an actor lives on one node
    largest = max((int(n.get("Resources", {}).get("CPU", 0)) for n in alive), default=total)
    cpus = max(1, min(total // count, largest))
    return count, {"num_cpus": cpus}, threads or cpus


def run_missing(store: Store, recipe: ModelRecipe, todo: Sequence, batch_size: int | None = None,
                progress: Callable[[int, int, object], None] | None = None, actors: int | None = None,
                threads: int | None = None, on_started: Callable[[list[dict]], None] | None = None,
                on_retry: Callable[[object, BaseException], None] | None = None) -> int:
    """Sample the planned runs `todo` on the connected cluster (see `connect`); returns how many were stored.
    on_started(placement) once the actors are up; on_retry(run, error) for each run lost with a dead worker.
    KeyboardInterrupt stops the actors and propagates: what was committed stays, a re-run resumes."""
    ray = import_ray()
    if not todo:
        return 0
    count, resources, torch_threads = plan_actors(recipe.device, actors, threads)
    versions = tuple(sorted(library_versions().items()))
    remote = ray.remote(max_restarts=-1, max_task_retries=0)(SweepWorker)
    pool = [remote.options(**resources).remote(recipe, torch_threads, versions) for _ in range(count)]
    try:
        placed = _placement(ray, pool, resources)
        if on_started is not None:
            on_started(placed)
        return _Driver(ray, store, todo, batch_size, progress, on_retry).run(pool)
    finally:
        for actor in pool:
            ray.kill(actor, no_restart=True)


def _placement(ray, pool: list, resources: dict) -> list[dict]:
    """Where each actor started (its `where()`), once all have; a CertlibError when they do not start in time or
    one could not load the model."""
    try:
        placed = ray.get([a.where.remote() for a in pool], timeout=START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise CertlibError(f"the Ray workers did not start within {START_TIMEOUT_S} s: the cluster may not have "
                           f"the resources asked for ({len(pool)} actors × {resources}); see `ray status`") from None
    failed = [p for p in placed if p["error"]]
    if failed:                                      # no weights on a node, other code, a model that fails
        raise CertlibError(f"a Ray worker could not start on node {failed[0]['node']}: {failed[0]['error']}")
    return placed


class _Driver:
    """The driver's loop over the runs: keeps every actor fed (PREFETCH runs each), commits each result to the
    store as it arrives, and sends the runs of a dead worker back to the queue (probing the actor until Ray has
    restarted it)."""

    def __init__(self, ray, store: Store, todo: Sequence, batch_size: int | None,
                 progress: Callable[[int, int, object], None] | None,
                 on_retry: Callable[[object, BaseException], None] | None) -> None:
        self.ray, self.store, self.batch_size = ray, store, batch_size
        self.progress, self.on_retry = progress, on_retry
        self.queue = deque((r, 0) for r in todo)
        self.inflight: dict = {}          # task ref -> (actor, run, attempts)
        self.probes: dict = {}            # ref of a health call to an actor whose task died -> actor
        self.total = sum(r.samples for r in todo)
        self.done = self.stored = 0

    def run(self, pool: list) -> int:
        """Until every run is stored; returns how many were."""
        for actor in pool:
            self._feed(actor)
        while self.inflight or self.queue:
            if not self.inflight and not self.probes:
                raise CertlibError("no Ray worker is left to run the remaining runs; the runs stored so far are "
                                   "kept, run the same command to resume")
            (ref,), _ = self.ray.wait([*self.inflight, *self.probes], num_returns=1)
            if ref in self.probes:
                self._actor_probed(ref)
            else:
                self._task_ended(ref)
        return self.stored

    def _submit(self, actor) -> None:
        run, attempts = self.queue.popleft()
        x = run.x.numpy()               # read on the driver (folders: from disk), shipped with the task
        self.inflight[actor.run.remote(run.config.canonical(), x, self.batch_size)] = (actor, run, attempts)

    def _feed(self, actor) -> None:
        for _ in range(PREFETCH):
            if self.queue:
                self._submit(actor)

    def _actor_probed(self, ref) -> None:
        """An actor is back after a restart: feed it again (or, gone for good, the others take its share)."""
        actor = self.probes.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            return
        self._feed(actor)

    def _task_ended(self, ref) -> None:
        actor, run, attempts = self.inflight.pop(ref)
        try:
            key, blob, seconds = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:       # the run itself failed: the same error as locally
            raise _cause(exc) from None
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ObjectLostError) as exc:
            self._lost(actor, run, attempts, exc)
            return
        self._commit(run, key, blob, seconds)
        if self.queue:
            self._submit(actor)

    def _lost(self, actor, run, attempts: int, exc: BaseException) -> None:
        """A run lost with its worker goes back to the queue, to run elsewhere; its actor is probed."""
        if attempts + 1 >= MAX_ATTEMPTS:
            raise CertlibError(f"{run.image_label or run.config.image_key}: its worker died {MAX_ATTEMPTS} times "
                               f"({type(exc).__name__}); the runs stored so far are kept, run the same command to "
                               "resume") from None
        self.queue.appendleft((run, attempts + 1))
        if self.on_retry is not None:
            self.on_retry(run, exc)
        if actor not in self.probes.values():
            self.probes[actor.where.remote()] = actor     # fed again once Ray has restarted it

    def _commit(self, run, key: str, blob: bytes, seconds: float) -> None:
        if key != run.config.key:
            raise CertlibError(f"a worker returned run {key[:12]} for {run.config.key[:12]}")
        counts, x = counts_from_bytes(blob)
        self.store.put(run.config, counts, x, seconds)
        self.stored += 1
        self.done += run.samples
        if self.progress is not None:
            self.progress(self.done, self.total, run)


def _cause(exc) -> BaseException:
    """The exception a failed Ray task raised in the worker (a CertlibError keeps its type and message)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else CertlibError(str(exc).splitlines()[-1])

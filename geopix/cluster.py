"""Running a job's tasks on Dask: the cluster they run on, and the one loop that submits them.

``render`` and ``pyramid`` both come here to find the scheduler (``--scheduler``, a scheduler
file or ``$DASK_SCHEDULER_ADDRESS``), check a remote cluster (workers, package versions) or
start a local one that listens on loopback only, decide the precision and torch threads every
worker uses, and run tasks with bounded back-pressure (``run_tasks``), cancelling them and
waiting for the workers to stop on an error or an interrupt.  A client of ``None`` means "in
this process" (``--scheduler sync``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from geopix.config import InferConfig
from geopix.errors import ClusterError, GeopixError
from geopix.process import configure_process

if TYPE_CHECKING:  # torch: only the type is needed here
    from geopix.models.checkpoint import LoadedModel

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable naming a scheduler when neither --scheduler nor --scheduler-file is given
#: (the same name Dask itself reads).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: How long to wait for a remote scheduler to have at least one worker (seconds).
WORKER_WAIT_ENV = "GEOPIX_WORKER_WAIT"
#: Packages whose versions must agree between client and workers: a mismatch in the first group
#: breaks (de)serialisation of tasks, in ``geopix`` it can change pixels, in ``torch`` too
#: (compared without the ``+cpu``/``+cu126`` build tag, so CPU and GPU workers can mix).
_SERIALISATION_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack")
_WORKER_PACKAGES = ("geopix", "torch")
#: How long a cancelled job waits for the tasks already running on workers to return (seconds).
STOP_WAIT_S = 120.0


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 2))


def resolve_scheduler(scheduler: str | None, scheduler_file: str | Path | None = None) -> str | None:
    """The cluster to use: ``--scheduler``, else ``--scheduler-file``, else ``$DASK_SCHEDULER_ADDRESS``.

    ``None`` means a local cluster; ``"sync"`` means in this process.
    """
    if scheduler and scheduler_file:
        raise ClusterError("give either --scheduler or --scheduler-file, not both")
    if scheduler:
        return scheduler
    if scheduler_file:
        if not Path(scheduler_file).is_file():
            raise ClusterError(
                f"--scheduler-file {scheduler_file} does not exist; `dask scheduler --scheduler-file FILE` writes it"
            )
        return str(scheduler_file)
    return os.environ.get(SCHEDULER_ENV) or None


# ---- version check ----------------------------------------------------------------------------
def _comparable(pkg: str, version: str | None) -> str | None:
    if version is None:
        return None
    if pkg == "torch":
        return version.split("+")[0]
    if pkg == "python":
        return ".".join(version.split(".")[:2])
    return version


def version_mismatches(versions: dict) -> list[str]:
    """Lines naming each package whose version differs between this client and the cluster.

    ``versions`` is what ``Client.get_versions(packages=["geopix", "torch"])`` returns.  Pure, so
    it is tested without a cluster.
    """
    client = versions["client"]["packages"]
    problems = []
    nodes = {"scheduler": versions.get("scheduler") or {}}
    nodes.update({f"worker {addr}": v or {} for addr, v in (versions.get("workers") or {}).items()})
    for name, info in nodes.items():
        pkgs = info.get("packages", {})
        wanted = _SERIALISATION_PACKAGES + (() if name == "scheduler" else _WORKER_PACKAGES)
        for pkg in wanted:
            mine, theirs = _comparable(pkg, client.get(pkg)), _comparable(pkg, pkgs.get(pkg))
            if mine != theirs:
                problems.append(f"{name}: {pkg} {theirs or 'MISSING'} (client has {mine or 'MISSING'})")
    return problems


def _worker_wait_s() -> float:
    """How long to wait for workers to join: ``$GEOPIX_WORKER_WAIT`` seconds, else 120."""
    return float(os.environ.get(WORKER_WAIT_ENV, "120"))


def check_cluster(client, wait_s: float | None = None) -> None:
    """Fail early and clearly instead of hanging (no workers) or failing in a task (version skew)."""
    if wait_s is None:
        wait_s = _worker_wait_s()
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError as exc:
        raise ClusterError(
            f"the Dask scheduler at {client.scheduler.address} has no workers after {wait_s:.0f} s; "
            f"start some with `dask worker {client.scheduler.address}` (or raise ${WORKER_WAIT_ENV})"
        ) from exc
    problems = version_mismatches(client.get_versions(packages=list(_WORKER_PACKAGES)))
    if problems:
        raise ClusterError(
            "the cluster runs other package versions than this client: "
            + "; ".join(problems[:6])
            + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else "")
            + "; install the same versions on the workers"
        )


# ---- connecting ---------------------------------------------------------------------------------
def dashboard_link(client, local: bool = False) -> str | None:
    """The Dask dashboard URL, or None when the scheduler runs without one.

    A local cluster's dashboard listens on 127.0.0.1; Dask's own link would name the machine's
    external address (where nothing listens), so it is built from the port here.
    """
    try:
        if local:
            port = client.scheduler_info().get("services", {}).get("dashboard")
            return f"http://127.0.0.1:{port}/status" if port else None
        return client.dashboard_link
    except (KeyError, AttributeError, TypeError):
        return None


def connect(scheduler: str | None, workers: int | None, dashboard: bool = False):
    """``(client, cluster_or_None)``: to ``scheduler`` (address or scheduler file), else a LocalCluster.

    A remote cluster is checked (has workers, same versions) before any task is sent.  A local
    cluster listens on 127.0.0.1 only (scheduler, workers and their HTTP servers): nothing of
    it is reachable from another machine, and the dashboard link it prints opens.  It serves
    the dashboard only with ``dashboard``: its pages took 0.45 of the 0.5 s a local cluster
    needed to start (measured, in-process worker; 0.03 s without).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        is_file = scheduler.endswith(".json") or Path(scheduler).is_file()
        try:
            if is_file:
                client = Client(scheduler_file=scheduler, timeout=timeout)
            else:
                client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask scheduler` "
                f"or leave --scheduler/--scheduler-file/${SCHEDULER_ENV} out to use a local cluster"
            ) from exc
        try:
            check_cluster(client)
        except BaseException:
            client.close()
            raise
        return client, None
    # The default (workers None): one in-process worker with a task thread per core.
    # Nothing to spawn, the model is loaded once, and while one thread runs the generator
    # the other reads, blends and writes (measured: 2 threads × 1 torch thread run the
    # generator as fast as 1 × 2, so the I/O comes for free).  --workers N: N processes.
    in_process = workers is None
    with dask.config.set(_quiet_local_cluster(in_process, dashboard)):
        cluster = LocalCluster(
            n_workers=1 if in_process else workers,
            threads_per_worker=(os.cpu_count() or 1) if in_process else 1,
            processes=not in_process,
            # Loopback only, ephemeral ports (several renders may run at once): the scheduler's and
            # the workers' HTTP servers, which would otherwise listen on the machine's address.
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            # The dashboard's pages only when asked (Dask serves them wherever there is an address).
            scheduler_kwargs={"dashboard": dashboard},
            **({} if dashboard or not in_process else {"worker_class": _worker_without_pages()}),
            # A failed task is reported once, by the client, as one line; the workers' own
            # "Compute Failed ... Traceback" (logged at ERROR) would repeat it.
            silence_logs=logging.CRITICAL,
        )
    client = Client(cluster)
    try:
        # LocalCluster returns once its worker processes are spawned, not once each has joined
        # the scheduler; a job sized by the workers seen (2 tasks in flight per task thread)
        # would otherwise start with fewer on a busy machine.
        wait_s = _worker_wait_s()
        try:
            client.wait_for_workers(len(cluster.workers), timeout=wait_s)
        except TimeoutError as exc:
            raise ClusterError(
                f"the local cluster's {len(cluster.workers)} workers did not all start within {wait_s:.0f} s "
                f"({exc}); use fewer --workers, or raise ${WORKER_WAIT_ENV} on a busy machine"
            ) from exc
    except BaseException:
        client.close()
        cluster.close()
        raise
    return client, cluster


def _quiet_local_cluster(in_process: bool, dashboard: bool) -> dict[str, object]:
    """Dask settings for a local cluster geopix starts: no statistical profiler without a
    dashboard to show it (it walks every thread's stack each 10 ms, holding the GIL), and no
    work stealing for the one in-process worker (nobody to steal from).  8192² int8 render,
    four interleaved pairs: 18.9 → 18.5 s whole process."""
    quiet: dict[str, object] = {} if dashboard else {"distributed.worker.profile.enabled": False}
    if in_process:
        quiet["distributed.scheduler.work-stealing"] = False
    return quiet


def _dashboard_pages(asked: bool) -> bool:
    """Whether a local cluster serves the dashboard's pages: asked for, and bokeh installed."""
    if not asked:
        return False
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        log.warning("no Dask dashboard: it needs bokeh (pip install bokeh)")
        return False
    return True


def _worker_without_pages():
    from distributed import Worker

    class WorkerWithoutPages(Worker):
        """An in-process worker whose HTTP server (loopback) serves no dashboard pages."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "dashboard": False})

    return WorkerWithoutPages


@contextlib.contextmanager
def open_cluster(
    scheduler: str | None,
    workers: int | None,
    announce: Callable[[str], None] | None = None,
    dashboard: bool = False,
):
    """A client for the job (``None`` with ``scheduler="sync"``), closed afterwards; a local
    cluster serves the dashboard only with ``dashboard`` (a remote one's link is announced).

    The local cluster is closed before this returns, and closing it joins its task threads:
    after the ``with`` block nothing of the job runs in this process any more.
    """
    if scheduler == "sync":
        yield None
        return
    import torch

    torch_threads = torch.get_num_threads()  # the in-process worker changes it; put it back
    pages = _dashboard_pages(dashboard)
    client, cluster = connect(scheduler, workers, pages)
    # A local cluster's HTTP server answers either way: its link only where the pages are.
    link = dashboard_link(client, local=cluster is not None) if cluster is None or pages else None
    if announce is not None and link:
        announce(f"Dask dashboard: {link}")
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        torch.set_num_threads(torch_threads)


# ---- what every worker runs with ------------------------------------------------------------------
def _answers(client, fn, *args) -> set:
    """What ``fn(*args)`` gives on every worker: run here without a client (the in-process worker)."""
    return {fn(*args)} if client is None else set(client.run(fn, *args).values())


def _worker_precision(precision: str, device: str) -> str:
    from geopix.infer import resolve_device, resolve_precision

    return resolve_precision(precision, resolve_device(device))


def _worker_int8(device: str) -> str | None:
    """The worker's int8 instruction class (``runtime.int8_isa``) where it runs int8 fast, else None."""
    from geopix.infer import int8_capable, resolve_device
    from geopix.runtime import int8_isa

    return int8_isa() if int8_capable(resolve_device(device)) else None


def _int8_gate(model_path: str, infer: InferConfig, loaded: LoadedModel | None, isa: str, here: bool) -> bool:
    """Does ``model_path``'s int8 model for workers of int8 class ``isa`` pass its quality gate?

    Measured by this process (``infer.int8_ready``) where its CPU is of the workers' class (always
    so when it runs the tiles itself); a model's agreement with fp32 moved with the class (sat2map: 99.16 % with
    VNNI, 98.87 % on AVX2), so for other classes only a shipped model, checked by the developers
    for that class (``quantize.shipped_int8``: on such a CPU, or with the exact sums VNNI and AMX
    compute), vouches for it."""
    from geopix.infer import int8_ready, resolve_device
    from geopix.runtime import has_openvino, int8_isa

    mine = int8_isa()
    if mine == isa:
        return int8_ready(model_path, resolve_device(infer.device), loaded, here=here)
    from geopix.models.quantize import shipped_int8

    shipped = shipped_int8(model_path, isa) if has_openvino() else None
    if shipped is None:
        log.info(
            "not int8: the workers' CPUs run int8 as %s, this one as %s, and int8's quality gate is "
            "measured per class; geopix ships no checked int8 model of this checkpoint for %s",
            isa,
            mine or "nothing",
            isa,
        )
    return shipped is not None and shipped.passes


def _warn_emulated_bf16(infer: InferConfig, client=None) -> None:
    """``--precision bf16`` where a worker only emulates it: say so before the render starts.  On a
    Zen 3 without AVX512-BF16, torch's bf16 took 2.6 s per 256² tile against fp32's 43 ms."""
    if _answers(client, _worker_precision, "auto", infer.device) != {"bf16"}:
        log.warning(
            "--precision bf16: a worker's device (--device %s) has no native bf16 (a CPU with "
            "AVX512-BF16 or AMX, or a CUDA GPU of compute capability 8+) and emulates it, which can be "
            "~60x slower than fp32; use --precision auto (or fp32, or int8 with geopix[int8])",
            infer.device,
        )


def _hint_int8_extra(infer: InferConfig) -> None:
    """``auto`` on a CPU that runs int8 fast, without OpenVINO installed: say what it would give."""
    from geopix.infer import resolve_device
    from geopix.runtime import has_openvino, int8_isa

    isa = int8_isa()
    if resolve_device(infer.device).type == "cpu" and isa is not None and not has_openvino():
        log.info(
            "this CPU runs int8 (%s): with pip install 'geopix[int8]' (OpenVINO), --precision auto "
            "renders sat2map about 2x faster here (docs/scaling.md); --precision fp32 hides this line",
            isa,
        )


def cluster_precision(
    infer: InferConfig, client=None, model_path: str | None = None, loaded: LoadedModel | None = None
) -> str:
    """Resolve ``--precision auto`` once for the whole render, so every worker computes alike.

    int8 when every worker can run it fast (``infer.int8_capable``), all with one int8 instruction
    class (each class has its own model, so mixed classes would draw different maps), and
    ``model_path``'s int8 model passes its quality gate for that class (:func:`_int8_gate`); else bf16
    only when *every* worker runs it natively; one fp32-only worker makes it fp32.  ``loaded``:
    the model already in memory (the render's), so the gate does not read the checkpoint again.
    """
    if infer.precision == "bf16":
        _warn_emulated_bf16(infer, client)
    if infer.precision != "auto":
        return infer.precision
    if model_path is not None:
        # On a cluster the workers' CPUs decide; this process (a laptop, say) only measures the gate.
        classes = _answers(client, _worker_int8, infer.device)
        one = next(iter(classes)) if len(classes) == 1 else None
        if one is not None and _int8_gate(model_path, infer, loaded, one, here=client is None):
            return "int8"
        if client is None and one is None:
            _hint_int8_extra(infer)
    answers = _answers(client, _worker_precision, infer.precision, infer.device)
    return answers.pop() if len(answers) == 1 else "fp32"


def task_threads(scheduler: str | None, workers: int | None, threads: int | None, n_tasks: int) -> int | None:
    """Torch threads per worker process: ``--threads`` when given, else what this machine suggests.

    The in-process default runs a task thread per core, so each task gets 1 — or, with fewer
    tasks than cores, the idle cores too (the thread count does not change a byte: see the
    determinism test).  Worker processes get cores / workers.  Remote workers keep their own
    setting unless ``--threads`` is given.
    """
    if threads is not None:
        return threads
    if scheduler not in (None, "sync"):
        return None
    cores = os.cpu_count() or 1
    if scheduler == "sync":
        return cores
    if workers is None:
        return max(1, cores // max(1, min(cores, n_tasks)))
    return max(1, cores // workers)


class ProcessSetup:
    """A Dask worker plugin: the process-wide settings (``configure_process``) on every worker,
    including those a nanny restarts later."""

    name = "geopix-process-setup"

    def __init__(self, torch_threads: int | None) -> None:
        self.torch_threads = torch_threads

    def setup(self, worker=None) -> None:
        configure_process(self.torch_threads)

    def teardown(self, worker=None) -> None:
        pass


def set_up_workers(client, torch_threads: int | None) -> None:
    """Apply the process settings where the tasks will run: the workers, or this process."""
    if client is None:
        configure_process(torch_threads)
        return
    from distributed.diagnostics.plugin import WorkerPlugin

    plugin = type("GeopixProcessSetup", (ProcessSetup, WorkerPlugin), {})(torch_threads)
    client.register_plugin(plugin, name=ProcessSetup.name)


def slots(client) -> int:
    """Task threads across the cluster's workers."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()))


# ---- running tasks --------------------------------------------------------------------------------
_ACTIVE: dict[str, int] = {}
_ACTIVE_LOCK = threading.Lock()


def _tracked(job_id: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on a worker, counted as running for ``job_id`` until it returns."""
    with _ACTIVE_LOCK:
        _ACTIVE[job_id] = _ACTIVE.get(job_id, 0) + 1
    try:
        return fn(*args)
    except GeopixError as exc:
        # Its message says all; its chained causes (GDAL's, zarr's) may not unpickle on the client.
        exc.__cause__ = exc.__context__ = None
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[job_id] -= 1


def _running(job_id: str) -> int:
    with _ACTIVE_LOCK:
        return _ACTIVE.get(job_id, 0)


def run_tasks(
    fn: Callable[..., Any],
    common: tuple,
    items: Iterable[T],
    on_done: Callable[[T, Any], None],
    client,
    *,
    label: str,
    max_in_flight: int | None = None,
) -> None:
    """Run ``fn(*common, item)`` for every item, in this process (``client is None``) or on Dask.

    At most ``max_in_flight`` tasks (default: 2 per task thread) are submitted at once, so the
    client's memory does not grow with the job.  Each result is passed to ``on_done`` once, as
    it arrives.  Tasks are not retried: geopix tasks are deterministic, so a task that raised
    would raise again (a worker that *dies* is another matter: the scheduler reruns its tasks).
    On any exception — a failed task, Ctrl-C, SIGTERM — the remaining tasks are cancelled and
    this waits until the ones already running on workers have returned, then re-raises.
    """
    if client is None:
        for item in items:
            on_done(item, fn(*common, item))
        return
    from distributed import as_completed

    limit = max_in_flight or 2 * slots(client)
    job_id = f"geopix-{label}-{uuid.uuid4().hex[:12]}"
    item_iter = iter(items)
    pending: dict[str, tuple[Any, T]] = {}
    ac = as_completed(loop=client.loop)  # this client's loop, not the default client's (jobs in threads)
    counter = [0]

    def submit_next() -> bool:
        item = next(item_iter, None)
        if item is None:
            return False
        counter[0] += 1
        fut = client.submit(_tracked, job_id, fn, *common, item, pure=False, key=f"{job_id}-{counter[0]}")
        pending[fut.key] = (fut, item)
        ac.add(fut)
        return True

    try:
        for _ in range(limit):
            if not submit_next():
                break
        for fut in ac:
            _, item = pending.pop(fut.key)
            result = fut.result()
            fut.release()
            on_done(item, result)
            submit_next()
    except BaseException:
        _cancel_and_wait(client, job_id, [f for f, _ in pending.values()])
        raise


def _cancel_and_wait(client, job_id: str, futures: list, timeout: float = STOP_WAIT_S) -> None:
    """Cancel ``futures`` and wait until no task of ``job_id`` runs on any worker.

    A task already running cannot be stopped from outside (it may be inside GDAL or torch);
    returning before it has finished would let the caller close files it still reads.
    """
    try:
        client.cancel(futures)
    except Exception as exc:  # a client that is already closing: nothing left to cancel
        log.debug("cancelling %d tasks failed: %s", len(futures), exc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            busy = sum(client.run(_running, job_id, on_error="ignore").values())
        except Exception:  # the cluster is gone: nothing of ours runs any more
            return
        if not busy:
            return
        time.sleep(0.05)
    log.warning("%s: tasks still running on workers after %.0f s", job_id, timeout)

"""``adrun sweep --backend ray``: each cell is a Ray task; the driver keeps the sweep's state.

The only module that imports ray, and only when asked. Ray does the scheduling and the
retries; adrun adds what a sweep needs around them (the contract is ``backends.base``):

* **Preflight.** Before the first cell a tiny task runs on every alive node and checks that
  the dataset root and the output folder are there, readable, writable, and the *same*
  folder the driver sees (a token file the driver wrote must be visible). One line per
  problem, naming the node.
* **Records only from the driver.** A task runs ``run_cell`` with an in-memory record sink,
  writes ``model.ckpt`` and ``log.txt`` into the shared run folder and returns the record;
  the driver writes ``record.json`` atomically, so a killed driver leaves whole files and
  the next sweep resumes from them.
* **Node loss costs a retry, not the sweep.** Tasks have ``max_retries=MAX_RETRIES`` for
  system failures (a node or worker process dying) and ``retry_exceptions=False``: a cell's
  own exception is a failed record, as with the local backend. Each attempt appends one
  line to ``<run>/attempts.jsonl`` (node, pid, time); the driver reads it for the progress
  view and records ``attempts`` and ``node`` in the record.
* **The same failure rule.** A task returns an error that aborts the sweep (a full disk) by
  class and message; the driver cancels the cells not yet started, waits for the running
  ones and raises the same error. Any other error (missing weights on a node) fails its cell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrun import errors
from adrun.backends.base import Event, Interrupts, Record, Report, dead_record, run_one
from adrun.errors import ClusterError, WireError, from_wire
from adrun.records import atomic_write_text, now, run_dir, write_record
from adrun.wording import plural

if TYPE_CHECKING:
    from adrun.config import Cell

ATTEMPTS = "attempts.jsonl"
# Ray retries a task whose node or worker process died; a third death fails the cell.
MAX_RETRIES = 2
PREFLIGHT_TIMEOUT_S = 120
CONNECT_TIMEOUT_S = 5
AUTH_CHECK_TIMEOUT_S = 60
POLL_S = 0.5
# The error of a cell a node had begun when the sweep stopped (a full disk, --fail-fast).
CANCELLED = "cancelled: the sweep stopped"
INSTALL = "pip install 'adrun[ray]'"
DOCS = "docs/many-machines.md"


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--backend ray needs Ray, which is not installed; run: {INSTALL}") from None
    return ray


@dataclass
class Node:
    id: str
    ip: str
    cpus: float
    gpus: float

    @property
    def name(self) -> str:
        # Several nodes can share a machine (and an IP): the id prefix tells them apart.
        return f"{self.ip} ({self.id[:8]})"


@dataclass
class Cluster:
    address: str
    dashboard_url: str | None
    nodes: list[Node]
    auth_warning: str | None = None  # one line when the cluster does not check tokens

    def summary(self) -> str:
        cpus = sum(n.cpus for n in self.nodes)
        gpus = sum(n.gpus for n in self.nodes)
        return (
            f"ray cluster {self.address}: {plural(len(self.nodes), 'node')}, {plural(cpus, 'CPU')}, "
            f"{plural(gpus, 'GPU')}"
        )


def alive_nodes() -> list[Node]:
    ray = _ray()
    return [
        Node(n["NodeID"], n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
        for n in ray.nodes()
        if n.get("Alive")
    ]


@contextlib.contextmanager
def session(address: str | None = None) -> Iterator[Cluster]:
    """Connect to the cluster at ``address`` (``auto``: the one ``ray start`` made here, or
    ``$RAY_ADDRESS``); reuse a connection that is already open. Disconnects only what it opened."""
    ray = _ray()
    opened = not ray.is_initialized()
    if opened:
        if address and address != "auto":
            _reachable(address)
        try:
            with _stderr_held() as held:
                ctx = ray.init(address=address or "auto", log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if errors.DEBUG:
                sys.stderr.write("".join(held))  # Ray's own log lines of the failed connection
            text = str(exc).strip().splitlines()
            token = (
                ""
                if _driver_sends_token()
                else (
                    "; if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token "
                    "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here too"
                )
            )
            raise ClusterError(
                f"no Ray cluster at {address or 'auto'} ({text[0] if text else type(exc).__name__}); "
                f"start one with `ray start --head` or pass --address HOST:PORT{token} (see {DOCS})"
            ) from None
        dashboard = ctx.dashboard_url or None
    else:
        dashboard = None
    try:
        gcs = ray.get_runtime_context().gcs_address
        yield Cluster(
            gcs,
            f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard,
            alive_nodes(),
            auth_warning=_auth_warning(gcs) if opened else None,
        )
    finally:
        if opened:
            ray.shutdown()


@contextlib.contextmanager
def _stderr_held() -> Iterator[list[str]]:
    """Hold what is written to file descriptor 2 while connecting: Ray's C++ client logs there,
    one line per retry. On success it is passed on; on failure it is left in the yielded list."""
    sys.stderr.flush()
    saved = os.dup(2)
    held: list[str] = []
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)

        def restore() -> str:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            return buffer.read().decode("utf-8", "replace")

        try:
            yield held
        except BaseException:
            held.append(restore())
            raise
        sys.stderr.write(restore())


def _driver_sends_token() -> bool:
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return is_token_auth_enabled()


def head_auth_mode() -> str:
    """Runs on the head node: whether its Ray checks tokens (its workers share the raylet's setting)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return "token" if is_token_auth_enabled() else "disabled"


def _auth_warning(address: str) -> str | None:
    """One line when the cluster runs without Ray's token authentication (Ray 2.60+).

    A driver without a token that got in proves it; a driver with one would get in either
    way, so then the head itself is asked.
    """
    ray = _ray()
    if _driver_sends_token():
        try:
            task = ray.remote(head_auth_mode).options(
                num_cpus=0, max_retries=0, resources={"node:__internal_head__": 0.001}
            )
            if ray.get(task.remote(), timeout=AUTH_CHECK_TIMEOUT_S) == "token":
                return None
        except Exception as exc:  # noqa: BLE001 - only a warning hangs on it
            return (
                f"could not ask the Ray head at {address} whether it checks tokens ({type(exc).__name__}); "
                f"make sure it was started with RAY_AUTH_MODE=token (see {DOCS})"
            )
    return (
        f"the Ray cluster at {address} runs without token authentication: anyone who can reach its port "
        f"can run code there as its user; start every node with RAY_AUTH_MODE=token (see {DOCS})"
    )


def _reachable(address: str) -> None:
    """Fail in seconds, not minutes: Ray's own client retries a dead address for a long time."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"--address {address}: no Ray head answers there ({getattr(exc, 'strerror', None) or exc}); "
            f"start one with `ray start --head`, or pass the HOST:PORT it printed (see {DOCS})"
        ) from None


# --------------------------------------------------------------------------- on the nodes


def _this_node() -> tuple[str, str]:
    import ray

    return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()


def check_node(root: str, categories: list[str], exp_dir: str, token: str) -> dict[str, Any]:
    """Runs on one node: can this node read the data and write into the driver's output folder?"""
    from adrun import __version__

    ip, node_id = _this_node()
    problems = []
    where = " (a relative path resolves in the folder where `ray start` ran on that node)"
    data = Path(root)
    if not data.is_dir():
        problems.append(f"data.root {root} does not exist there{where if not data.is_absolute() else ''}")
    elif not os.access(data, os.R_OK | os.X_OK):
        problems.append(f"data.root {root} is not readable there")
    else:
        missing = [c for c in categories if not (data / c).is_dir()]
        if missing:
            problems.append(f"data.root {root} has no {missing[0]}/ there: not the driver's dataset")
    out = Path(exp_dir)
    if not out.is_dir():
        problems.append(f"output {exp_dir} does not exist there{where if not out.is_absolute() else ''}")
    elif not (out / token).is_file():
        problems.append(f"output {exp_dir} there is not the driver's folder (its check file is missing)")
    else:
        probe = out / f".adrun-probe-{node_id[:8]}-{os.getpid()}"
        try:
            probe.write_text("ok", encoding="utf-8")
            probe.unlink()
        except OSError as exc:
            problems.append(f"output {exp_dir} is not writable there ({exc.strerror or exc})")
    return {"ip": ip, "id": node_id, "adrun": __version__, "problems": problems}


def _note_attempt(folder: Path, ip: str, node_id: str) -> int:
    """Append this attempt to ``attempts.jsonl``; return its number (1 = first try)."""
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"node": ip, "node_id": node_id, "pid": os.getpid(), "started_at": now()})
    with open(folder / ATTEMPTS, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return len(_attempts(folder))


def _attempts(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / ATTEMPTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))  # a line torn by a kill is skipped
    return out


def cell_task(cell_json: dict, root: str, exp_dir: str) -> dict[str, Any]:
    """Runs on a node: one cell, returning its record (the driver writes it) and an aborting error."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from adrun.precision import ask_for_huge_pages

    ask_for_huge_pages()  # where this worker has not imported torch yet
    import ray
    import torch

    from adrun.config import Cell

    assigned = ray.get_runtime_context().get_assigned_resources()
    if assigned.get("CPU"):
        torch.set_num_threads(max(1, int(assigned["CPU"])))
    cell = Cell.model_validate(cell_json)
    ip, node_id = _this_node()
    attempt = _note_attempt(run_dir(Path(exp_dir), cell.folder), ip, node_id)
    # ray.cancel (the user pressed Ctrl-C on the driver) arrives as KeyboardInterrupt: an interrupted record.
    result = run_one(
        cell, Path(root), Path(exp_dir), sink=lambda folder, record: None, pinned_gpu=bool(assigned.get("GPU"))
    )
    result.record.update(node=ip, attempts=attempt)
    return {"record": result.record, "abort": result.abort}


# --------------------------------------------------------------------------- on the driver


def preflight(cells: Sequence[Cell], root: Path, exp_dir: Path, nodes: list[Node]) -> None:
    """Run ``check_node`` on every alive node; raise one line per problem, naming the node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from adrun import __version__

    ray = _ray()
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    token = f".adrun-preflight-{uuid.uuid4().hex[:12]}"
    atomic_write_text(exp_dir / token, "written by the adrun driver; removed after preflight\n")
    categories = sorted({c.category for c in cells})
    check = ray.remote(check_node)
    try:
        refs = {
            check.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
            ).remote(str(root), categories, str(exp_dir), token): node
            for node in nodes
        }
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PREFLIGHT_TIMEOUT_S)
        problems = [
            f"node {refs[ref].name}: did not answer the preflight check in {PREFLIGHT_TIMEOUT_S} s" for ref in late
        ]
        for ref in ready:
            node = refs[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                text = str(exc).strip().splitlines()
                problems.append(
                    f"node {node.name}: cannot run adrun there ({text[-1] if text else exc!r}); "
                    f"install the driver's adrun with {INSTALL} on every node"
                )
                continue
            if result["adrun"] != __version__:
                problems.append(
                    f"node {node.name}: adrun {result['adrun']} there, {__version__} on the driver; "
                    "install the same version on every node"
                )
            problems += [
                f"node {node.name}: {p}; every node must see the same paths (see {DOCS})" for p in result["problems"]
            ]
    finally:
        (exp_dir / token).unlink(missing_ok=True)
    if problems:
        raise ClusterError("\n".join(problems))


def resources(nodes: list[Node], jobs: int) -> dict[str, float]:
    """One GPU per cell where there are GPUs; otherwise the smallest worker's CPUs split ``jobs`` ways."""
    if any(n.gpus > 0 for n in nodes):
        return {"num_gpus": 1, "num_cpus": 1}
    cpus = [n.cpus for n in nodes if n.cpus >= 1]
    if not cpus:
        raise ClusterError(f"the Ray cluster has no node with a CPU or GPU to run cells on (see {DOCS})")
    return {"num_gpus": 0, "num_cpus": max(1, int(min(cpus)) // max(1, jobs))}


def _running_record(cell: Cell, root: Path, first: dict[str, Any]) -> Record:
    """What the driver writes when a cell's first attempt starts; the task's record replaces it."""
    from adrun.run import base_record

    record = base_record(cell, root)
    record.update(
        started_at=first["started_at"], node=first["node"], attempts=1, pid=first["pid"], cuda_visible_devices=None
    )
    return record


class RayBackend:
    """Cells as Ray tasks on the cluster at ``address``, or on ``cluster`` when the caller has
    connected already (the CLI does, to print it): one session per sweep either way."""

    name = "ray"

    def __init__(self, jobs: int = 1, address: str | None = None, cluster: Cluster | None = None):
        self.jobs, self.address, self.cluster = jobs, address, cluster

    def run(self, cells: Sequence[Cell], root: Path, exp_dir: Path, report: Report) -> None:
        if not cells:
            return
        with contextlib.ExitStack() as stack:
            cluster = self.cluster or stack.enter_context(session(self.address))
            preflight(cells, root, exp_dir, cluster.nodes)
            _schedule(list(cells), Path(root), Path(exp_dir), resources(cluster.nodes, self.jobs), report)


def _schedule(todo: list[Cell], root: Path, exp_dir: Path, opts: dict, report: Report) -> None:
    ray = _ray()
    task = ray.remote(cell_task).options(max_retries=MAX_RETRIES, retry_exceptions=False, **opts)
    pending: dict[Any, Cell] = {}
    for cell in todo:
        (run_dir(exp_dir, cell.folder) / ATTEMPTS).unlink(missing_ok=True)
        pending[task.remote(cell.model_dump(mode="json"), str(root), str(exp_dir))] = cell
    seen: dict[str, int] = {}  # cell name -> attempts already reported
    order: dict[str, int] = {}  # cell name -> its number in the progress view
    stop = {"now": False, "cancelled": False, "user": False}
    abort: WireError | None = None

    def name(cell: Cell) -> str:
        return cell.folder  # unique per cell, seeds included

    def poll(cell: Cell) -> list[dict]:
        attempts = _attempts(run_dir(exp_dir, cell.folder))
        for n in range(seen.get(name(cell), 0), len(attempts)):
            if n == 0:
                order[name(cell)] = len(order) + 1
                write_record(run_dir(exp_dir, cell.folder), _running_record(cell, root, attempts[0]))
            report(Event("started", cell, order[name(cell)], len(todo), node=attempts[n]["node"], attempt=n + 1))
        seen[name(cell)] = len(attempts)
        return attempts

    def cancel(started_too: bool) -> None:
        for ref, cell in pending.items():
            if started_too or not seen.get(name(cell)):
                ray.cancel(ref)

    with Interrupts(on_first=lambda: stop.update(now=True, user=True)):
        while pending:
            if stop["user"] and not stop["cancelled"]:
                stop["cancelled"] = True
                cancel(started_too=True)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for cell in pending.values():
                poll(cell)
            for ref in ready:
                cell = pending.pop(ref)
                attempts = poll(cell)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cancelled = stop["user"] or isinstance(exc, ray.exceptions.TaskCancelledError)
                    if cancelled and not attempts:
                        continue  # cancelled before it started: like a local cell after the stop, no record
                    first = (
                        {
                            "started_at": attempts[0]["started_at"],
                            "node": attempts[-1]["node"],
                            "attempts": len(attempts),
                        }
                        if attempts
                        else {}
                    )
                    if cancelled:
                        why = "interrupted by the user" if stop["user"] else CANCELLED
                        record = dead_record(cell, root, why, status="interrupted", **first)
                    else:
                        # Retries used up (the node died again and again) or the task could not run at all.
                        text = [line for line in str(exc).strip().splitlines() if line.strip()]
                        error = f"ray: {type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
                        record = dead_record(cell, root, error, **first)
                else:
                    record = result["record"]
                    if result["abort"] and abort is None:
                        abort = result["abort"]
                    if record["status"] == "interrupted" and not stop["user"]:
                        record["error"] = CANCELLED  # the task saw ray.cancel as a Ctrl-C
                write_record(run_dir(exp_dir, cell.folder), record)
                number = order.setdefault(name(cell), len(order) + 1)
                wants_stop = report(
                    Event(
                        "finished",
                        cell,
                        number,
                        len(todo),
                        record=record,
                        node=record.get("node"),
                        attempt=max(1, len(attempts)),
                    )
                )
                if (wants_stop or abort) and not stop["now"]:
                    stop["now"] = True
                    cancel(started_too=False)  # running cells finish, queued ones never start
    if abort:
        raise from_wire(abort)
    if stop["user"]:
        raise KeyboardInterrupt

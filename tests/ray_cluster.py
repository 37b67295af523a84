"""A real multi-node Ray cluster on this machine, for the tests and scripts/bench_ray.py.

Every node is a ``ray start --block`` process on loopback. Ray rewrites 127.0.0.1 to the
machine's outward IP (so that other machines could reach it), so the nodes use other
loopback addresses, 127.0.0.2 and up, which it keeps as given: every address Ray
advertises and dials stays on the loopback interface. Each node runs in a folder of its
own (its working directory, like a separate machine's) and with its own temp dir.

Token authentication is on, as docs/many-machines.md says to run a cluster: every node
gets ``RAY_AUTH_MODE=token`` and one random token, and a driver needs ``driver_env`` (the
same two variables) to get in. ``auth=False`` starts one without, to test the warning.

Every process of a node, down to the workers the raylet forks, runs in that node's folder;
killing a node means SIGKILL to every process whose working directory is that folder, all
at once, which is what losing a machine looks like to Ray. Nothing started by anyone else
is touched (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 90


def free_port(host: str = "127.0.0.2") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _refresh_ray_auth() -> None:
    """Ray reads RAY_AUTH_MODE and the token once per process: make it read them again (as
    ``ray.init`` itself does when it turns token mode on)."""
    if "ray" not in sys.modules:
        return  # read fresh at the first import
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass
class LocalNode:
    name: str
    ip: str
    cwd: Path
    proc: subprocess.Popen
    log: Path


@dataclass
class LocalCluster:
    base: Path  # short: Ray's socket paths live under it (AF_UNIX allows 107 bytes)
    env: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, LocalNode] = field(default_factory=dict)
    address: str = ""
    auth: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def driver_env(self) -> dict[str, str]:
        """What a driver's environment needs to join: Ray's token mode and this cluster's token."""
        if not self.auth:
            return {"RAY_AUTH_MODE": "disabled"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def _start(self, name: str, ip: str, args: list[str]) -> LocalNode:
        cwd = self.base / name
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.base / f"{name}.log"
        env = {
            **os.environ,
            **self.env,
            **self.driver_env,
            # Notice a dead node in ~2 s instead of Ray's default ~30 s.
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_initial_delay_ms": "1000",
        }
        proc = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                f"--node-ip-address={ip}",
                "--disable-usage-stats",
                f"--temp-dir={self.base / ('tmp-' + name)}",
                "--object-store-memory=100000000",
                *args,
            ],
            cwd=cwd,
            env=env,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        node = LocalNode(name, ip, cwd, proc, log)
        self.nodes[name] = node
        return node

    @contextlib.contextmanager
    def driver(self):
        """This process (and the drivers it starts) joins with ``driver_env``, then forgets it."""
        saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        for key in saved:
            os.environ.pop(key, None)
        os.environ.update(self.driver_env)
        _refresh_ray_auth()
        try:
            yield self
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = value
            _refresh_ray_auth()

    def start_head(self, cpus: int = 1, ip: str = "127.0.0.2") -> str:
        port = free_port(ip)
        self._start(
            "head",
            ip,
            [
                "--head",
                f"--port={port}",
                f"--num-cpus={cpus}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port(ip)}",
            ],
        )
        self.address = f"{ip}:{port}"
        return self.address

    def add_node(self, name: str, ip: str, cpus: int = 1) -> LocalNode:
        return self._start(name, ip, [f"--address={self.address}", f"--num-cpus={cpus}"])

    @staticmethod
    def _pids_in(folder: Path) -> list[int]:
        """Processes whose working directory is ``folder`` or below: a node's every process.

        Ray runs workers and agents in the directory where `ray start` ran, and cwd, unlike
        the environment (which setproctitle overwrites for ``ray::`` processes), stays true.
        """
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cwd = Path(os.readlink(entry / "cwd"))
                except OSError:
                    continue
                if cwd == folder or folder in cwd.parents:
                    pids.append(int(entry.name))
        return pids

    @staticmethod
    def _kill(pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of the node at once: raylet, object store, agents, workers."""
        pids = self._pids_in(self.nodes[name].cwd)
        self._kill(pids)
        self.nodes[name].proc.wait(timeout=30)
        del self.nodes[name]
        return pids

    def stop(self) -> None:
        for _ in range(3):  # a raylet may fork a worker while its siblings are being killed
            self._kill([pid for node in self.nodes.values() for pid in self._pids_in(node.cwd)])
            time.sleep(0.2)
        for node in self.nodes.values():
            try:
                node.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.nodes.clear()

"""A local Ray head for one machine, tamed, and the way a process joins it.

Ray out of the box reports usage statistics, starts a dashboard, and listens on every
address of the machine: `ray start --node-ip-address=127.0.0.1` alone is not enough,
since Ray swaps a loopback node address for the machine's outward one (so that other
machines could join) and its gRPC servers then listen on 0.0.0.0. Its gRPC servers bind
to 127.0.0.1 only when the node's address is 127.0.0.1, which Ray keeps only in its
single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, despite the name the switch
of that mode on Linux too). So the head started here runs with usage statistics off,
in that mode, with the dashboard off unless asked for, in a temporary directory of its
own, and in a session of its own: `Head.stop` ends exactly the processes of that
session (the head's and the workers it started), never another Ray on the machine,
which `ray stop` would (it kills every Ray process by name).

A second machine cannot join such a head: two machines need `ray start --head
--node-ip-address=<address>` on a private network, as docs/ray.md says.

`ray` is imported only through `import_ray`: the default install has no Ray, and its
import changes how every log record of the process is made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType

NAMESPACE = "miniexchange"
"""The Ray namespace of every named actor of the exchange."""

LOOPBACK = "127.0.0.1"

STARTED_LINE = "Ray runtime started."
"""What `ray start` prints once the head's processes are up."""

OBJECT_STORE_BYTES = 256 * 1024 * 1024
"""The head's shared-memory object store: the exchange passes small batches by value,
and Ray's default (30% of the memory) would claim gigabytes of a shared machine."""


class HeadError(Exception):
    """The head did not start; the message ends with the tail of Ray's output."""


def tamed_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (the process's environment) with Ray's usage statistics off, its
    single-machine mode on (which keeps 127.0.0.1 as the node's address), and no
    drain on SIGTERM (Ray would wait up to 30 s for the leases of detached actors,
    the shards, to come back; the exchange stops its actors itself first)."""
    environment = dict(os.environ if base is None else base)
    environment["RAY_USAGE_STATS_ENABLED"] = "0"
    environment["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    environment["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return environment


RAY_PRESELECTED_PORTS = frozenset((8265, 52365, *range(10002, 20000)))
"""Ports `ray start` gives its own components whatever the GCS's (the dashboard's, its
agent's, the workers' range): a GCS port among them makes the start fail ("is trying to
use a port number ... used by other components"), as one drawn at random did once."""


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, none Ray keeps for its own components (the
    GCS's: Ray's default 6379 may be taken)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if port not in RAY_PRESELECTED_PORTS:
            return port


def session_processes(session: int) -> dict[int, str]:
    """The live processes of a session (pid -> command name), zombies left out.

    Every process Ray starts for the head stays in the session of `ray start` (its
    workers change their process group, not their session), so the session is the
    handle on all of them, whoever their parent is by now."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, _group, sid = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(sid) == session and state != "Z":
            found[int(entry.name)] = name
    return found


@dataclass
class Head:
    """A running local head; `stop` (or leaving the `with` block) ends all of it."""

    address: str  # "127.0.0.1:<port>", what `connect` takes
    temp_dir: Path  # Ray's sessions, sockets and logs
    process: subprocess.Popen[bytes]  # `ray start --head --block`, a session leader
    log_path: Path  # its standard output and error
    remove_temp_dir: bool = True
    stopped: bool = field(default=False, init=False)

    @property
    def session(self) -> int:
        return self.process.pid

    def processes(self) -> dict[int, str]:
        """The head's live processes, workers included (pid -> command name)."""
        return session_processes(self.session)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to `ray start`, which stops its processes in order (about 1.5 s
        here); whatever of the session is left after `grace_s` gets SIGTERM, then
        SIGKILL. Returns once none is left. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        self._wait_until_ended(grace_s)
        self._signal_all(signal.SIGTERM)
        self._wait_until_ended(2.0)
        while self.processes():  # a worker may start while the others stop
            self._signal_all(signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)  # reap `ray start`
        if self.remove_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _wait_until_ended(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _signal_all(self, signum: int) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def __enter__(self) -> Head:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_head(
    *,
    port: int | None = None,
    num_cpus: int | None = None,
    temp_dir: str | Path | None = None,
    dashboard: bool = False,
    object_store_bytes: int = OBJECT_STORE_BYTES,
    timeout_s: float = 60.0,
) -> Head:
    """Start a head on 127.0.0.1 and return once it serves.

    `port`: the GCS port (None: a free one). `num_cpus`: what Ray may schedule (None:
    the machine's cores). `temp_dir`: Ray's directory (None: a new one, removed by
    `stop`; Unix socket paths must stay short, so keep it near /tmp). `dashboard`:
    start Ray's dashboard on 127.0.0.1 (it needs `ray[default]`, which the `ray` extra
    does not install)."""
    own_dir = temp_dir is None
    directory = Path(tempfile.mkdtemp(prefix="mx-ray-") if temp_dir is None else temp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "head.log"
    gcs_port = free_loopback_port() if port is None else port
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={LOOPBACK}",
        f"--port={gcs_port}",
        f"--temp-dir={directory}",
        f"--num-cpus={num_cpus if num_cpus is not None else os.cpu_count() or 1}",
        f"--object-store-memory={object_store_bytes}",
        "--disable-usage-stats",
    ]
    if dashboard:
        command += ["--include-dashboard=true", f"--dashboard-host={LOOPBACK}"]
    else:
        command.append("--include-dashboard=false")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=tamed_environment(),
            start_new_session=True,
        )
    head = Head(f"{LOOPBACK}:{gcs_port}", directory, process, log_path, own_dir)
    deadline = time.monotonic() + timeout_s
    try:
        while STARTED_LINE not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                head.remove_temp_dir = False  # keep Ray's logs for whoever looks into it
                raise HeadError(f"the Ray head did not start (see {directory}):\n{tail}")
            time.sleep(0.1)
    except BaseException:  # failed, or this process is stopping (SIGTERM, Ctrl-C)
        head.stop()
        raise
    return head


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """Undo what importing `ray` does to the process's logging: it replaces the log
    record factory, so every record of every logger gets a `_ray_timestamp_ns`
    attribute, which the exchange's JSON log lines would print as one more field. Ray's
    own formatters do without it."""
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


def import_ray() -> ModuleType:
    """`import ray`, the process's logging left as it was (`ImportError` without Ray)."""
    with logging_kept():
        import ray
    return ray


def connect(address: str, namespace: str = NAMESPACE) -> None:
    """Join the cluster at `address` from this process (an ingress worker, a test, a
    benchmark): its named actors are found in `namespace`. Ray's own log lines stay
    quiet (warnings only, the workers' output not forwarded), and the process keeps its
    SIGTERM handler. Once per process; a second call is a no-op."""
    host = address.rsplit(":", 1)[0]
    loopback = host in (LOOPBACK, "localhost")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = import_ray()
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    if loopback:
        # Read from the environment when ray was first imported, which may have been
        # before this call: without it Ray would dial the machine's outward address.
        ray_constants.ENABLE_RAY_CLUSTER = False
    # ray.init replaces SIGTERM's handler (by `sys.exit`) when called on the main
    # thread: a server's graceful shutdown (uvicorn's) must keep its own.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(
            address=address,
            namespace=namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    finally:
        if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


@dataclass(frozen=True, slots=True)
class Listening:
    """A socket a process listens on (TCP) or is bound to (UDP)."""

    pid: int
    process: str
    protocol: str  # tcp, tcp6, udp, udp6
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    @property
    def loopback(self) -> bool:
        address = self.address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def proc_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net's address: 32-bit words in the machine's (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listening_sockets(processes: Mapping[int, str]) -> list[Listening]:
    """Every TCP socket in LISTEN and every bound UDP socket of `processes` (pid ->
    name), read from /proc: what the machine's network could reach of them."""
    owners: dict[str, tuple[int, str]] = {}
    for pid, name in processes.items():
        for inode in _socket_inodes(pid):
            owners[inode] = (pid, name)
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                listening = state == "0A" if protocol.startswith("tcp") else state == "07"
                if listening and inode in owners:
                    hex_address, hex_port = local.split(":")
                    pid, name = owners[inode]
                    found.append(
                        Listening(pid, name, protocol, proc_address(hex_address), int(hex_port, 16))
                    )
    return found


def disconnect() -> None:
    """Leave the cluster (the head and its detached actors go on)."""
    import_ray().shutdown()

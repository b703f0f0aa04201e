"""The HTTPS transport of deliveries, guarded as webhook senders of good reputation do it.

- TLS is always verified, against the system trust store (or, on a system without
  one, the Mozilla bundle requests ships) plus `WEBHOOK_CA_BUNDLE` as *extra* CAs.
  (`verify=<path>` would replace the defaults instead of extending them, so the adapter
  carries its own `SSLContext` and tells urllib3 to load nothing else.)
- Unless `WEBHOOK_ALLOW_PRIVATE=true`, a host is resolved first and refused when any of
  its addresses is not public (loopback, private, link-local, unspecified, reserved,
  multicast, shared, ...): the address is checked, not the name. An IPv6 address that
  carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) is judged by every IPv4
  address it carries: `2002:7f00:1::` is 127.0.0.1 reached through a 6to4 relay.
- Name resolution runs on helper threads and the delivery waits for it no longer than
  what is left of `WEBHOOK_TIMEOUT` (`getaddrinfo` cannot be interrupted, so a hung
  lookup is left to finish on its own thread). One lookup per (host, port) runs at a
  time, whoever asks; lookups run in lanes, each with a cap on those still running, so
  lookups that hang for subscriptions already failing cannot use up the ones of
  subscriptions in good standing.
- The connection goes to the address that was checked (no second lookup a DNS
  rebinding could answer differently), while the `Host` header, SNI and the
  certificate check keep the host name.
- No proxy from the environment (`trust_env=False`), no redirects (the caller passes
  `allow_redirects=False`), no retries, `http://` not mounted at all.

Residual risks, accepted: only the first vetted address is tried (no fallback to the
next one when it is unreachable); a hung lookup keeps its helper thread until the system
resolver gives up by itself (within its lane's cap: a full lane fails lookups at once).
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util import Timeout

Resolver = Callable[[str, int], list[str]]
"""(host, port) -> the addresses it resolves to, as text; raises OSError on failure.
It may block: `Resolutions` bounds how long anyone waits for it."""

Lookup = Callable[[str, int, float], list[str]]
"""(host, port, seconds to wait at most) -> the addresses; raises OSError."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

RESOLVER_IDLE_EXIT_S = 60.0
"""A resolver thread left idle this long ends (one comes back when needed)."""

ANSWER_KEPT_S = 1.0
"""A successful lookup answers the same (host, port) again for this long: a busy
receiver's deliveries skip the hand-over to a resolver thread (~0.2 ms each). The
connection still goes to the address checked, so this opens nothing to DNS rebinding."""

ANSWERS_KEPT = 1024
"""Kept answers at most (the oldest forgotten first)."""


class Refused(Exception):
    """The delivery was not sent: its host resolves to a non-public address."""


class ResolutionTimeout(OSError):
    """The host's name did not resolve within the time the delivery had left."""


class ResolutionBusy(OSError):
    """The lane already has as many lookups running (hung, most likely) as it may."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address of `host` for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, where traffic to it would end up:
    IPv4-mapped, 6to4 (`2002::/16`), Teredo (`2001::/32`: server and client) or NAT64
    (`64:ff9b::/96`); none for any other address."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    if address in NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def is_public(address: IPAddress) -> bool:
    """Whether a delivery may go to `address` without `WEBHOOK_ALLOW_PRIVATE`. An IPv6
    address that carries IPv4 ones is public when every one of them is (and only then):
    it is judged by where it leads, not by the relay prefix around it."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = embedded_ipv4(address)
        if carried:
            return all(is_public(ipv4) for ipv4 in carried)
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
    )


def vetted_address(host: str, port: int, allow_private: bool, resolve: Resolver) -> str:
    """The address to connect to; `Refused` if any address of `host` is not public."""
    addresses = [ipaddress.ip_address(text) for text in resolve(host, port)]
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise Refused(f"{host} resolves to non-public address {address}")
    return str(addresses[0])


class _Lookup:
    """One running lookup; whoever asks for the same (host, port) meanwhile waits for it."""

    __slots__ = ("addresses", "done", "error", "key", "lane")

    def __init__(self, key: tuple[str, int], lane: str) -> None:
        self.key = key
        self.lane = lane
        self.done = threading.Event()
        self.addresses: list[str] = []
        self.error: BaseException | None = None


class _ResolverThread:
    __slots__ = ("job", "wake")

    def __init__(self, job: _Lookup) -> None:
        self.job: _Lookup | None = job
        self.wake = threading.Event()


class Resolutions:
    """Name lookups whose callers wait a bounded time (see the module doc).

    `limits` maps each lane to the most lookups it may have running at once; past it a
    lookup of that lane fails at once with `ResolutionBusy` instead of adding a thread.
    Threads are reused and end after `RESOLVER_IDLE_EXIT_S` idle, so there are never
    more than the limits' sum. A host that is an IP address is not looked up at all;
    a successful answer is reused for `ANSWER_KEPT_S` (failures are not kept).
    """

    def __init__(self, resolve: Resolver, limits: Mapping[str, int]) -> None:
        self._resolve = resolve
        self._limits = dict(limits)
        self._lock = threading.Lock()
        self._running = dict.fromkeys(self._limits, 0)  # lane -> lookups not finished
        self._pending: dict[tuple[str, int], _Lookup] = {}
        self._idle: list[_ResolverThread] = []  # last in, first out
        # (host, port) -> (good until, on the monotonic clock; addresses)
        self._answers: OrderedDict[tuple[str, int], tuple[float, list[str]]] = OrderedDict()

    def lookup(self, host: str, port: int, timeout_s: float, lane: str) -> list[str]:
        """The addresses of `host`, waiting `timeout_s` at most (`ResolutionTimeout`)."""
        literal = host.removeprefix("[").removesuffix("]")
        try:
            return [str(ipaddress.ip_address(literal))]
        except ValueError:
            pass
        key = (host, port)
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None:
                if kept[0] > time.monotonic():
                    return list(kept[1])
                del self._answers[key]
            running = self._pending.get(key)
            if running is None:
                if self._running[lane] >= self._limits[lane]:
                    raise ResolutionBusy(
                        f"name resolution of {host}: {self._running[lane]} lookups still running"
                    )
                running = self._pending[key] = _Lookup(key, lane)
                self._running[lane] += 1
                self._hand_over(running)
        if not running.done.wait(timeout_s):
            raise ResolutionTimeout(f"name resolution of {host} took over {timeout_s:g}s")
        if running.error is not None:
            raise copy.copy(running.error)  # each caller its own (tracebacks differ)
        return list(running.addresses)

    def threads(self) -> int:
        """Threads running a lookup, or idle and kept for the next ones."""
        with self._lock:
            return sum(self._running.values()) + len(self._idle)

    def _hand_over(self, job: _Lookup) -> None:
        """To an idle thread, or a new one (under the lock)."""
        if self._idle:
            worker = self._idle.pop()
            worker.job = job
            worker.wake.set()
            return
        worker = _ResolverThread(job)
        threading.Thread(
            target=self._work, args=(worker,), name="webhook-resolver", daemon=True
        ).start()

    def _work(self, worker: _ResolverThread) -> None:
        while True:
            job = worker.job
            assert job is not None
            try:
                job.addresses = self._resolve(*job.key)
            except BaseException as error:  # handed to whoever waits, never lost here
                job.error = error
            with self._lock:
                del self._pending[job.key]
                self._running[job.lane] -= 1
                if job.error is None:
                    self._answers[job.key] = (time.monotonic() + ANSWER_KEPT_S, job.addresses)
                    self._answers.move_to_end(job.key)
                    if len(self._answers) > ANSWERS_KEPT:
                        self._answers.popitem(last=False)
                worker.job = None
                worker.wake.clear()
                self._idle.append(worker)
            job.done.set()
            worker.wake.wait(RESOLVER_IDLE_EXIT_S)
            with self._lock:
                if worker.job is None:  # nothing came: leave the idle list and end
                    self._idle.remove(worker)
                    return


def trust_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification always on: default trust plus `ca_bundle`'s CAs, host names checked.

    Loading a trust store costs a tenth of a second: build one context and share it
    (an `SSLContext` may serve many threads).
    """
    context = ssl.create_default_context()  # the system store, CERT_REQUIRED, check_hostname
    if not context.cert_store_stats()["x509_ca"]:  # none loaded (or a lazy directory)
        context.load_verify_locations(cafile=DEFAULT_CA_BUNDLE_PATH)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class PinnedHTTPSAdapter(HTTPAdapter):
    """Connects to the vetted address of the URL's host, with our own `SSLContext`.

    `send` resolves the host first, within the request's total timeout, and gives the
    POST only what is left of it: resolution and POST together take `WEBHOOK_TIMEOUT`
    at most. One adapter serves one thread (one request at a time).
    """

    def __init__(self, context: ssl.SSLContext, allow_private: bool, lookup: Lookup) -> None:
        self._context = context
        self._allow_private = allow_private
        self._lookup = lookup
        self._address: str | None = None  # vetted by `send` for the request it sends
        # One delivery at a time per thread: one kept connection per (address, host).
        super().__init__(pool_connections=32, pool_maxsize=1, max_retries=0)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        if not isinstance(timeout, Timeout) or timeout.total is None:
            raise TypeError("a delivery needs one total timeout (urllib3 Timeout(total=...))")
        started = time.monotonic()
        host_params, _ = self.build_connection_pool_key_attributes(request, verify, cert)
        host: str = host_params["host"]
        port: int = host_params["port"] or 443

        def resolve(name: str, at: int) -> list[str]:
            return self._lookup(name, at, timeout.total)

        self._address = vetted_address(host, port, self._allow_private, resolve)
        left = timeout.total - (time.monotonic() - started)
        if left <= 0:
            raise ResolutionTimeout(f"name resolution of {host} took over {timeout.total:g}s")
        try:
            return super().send(request, stream, Timeout(total=left), verify, cert, proxies)
        finally:
            self._address = None

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(
            connections, maxsize, block, ssl_context=self._context, **pool_kwargs
        )

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: dict[str, str] | None = None,
        cert: Any = None,
    ) -> HTTPConnectionPool:
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host: str = host_params["host"]
        port: int = host_params["port"] or 443
        address = self._address
        assert address is not None, "send() vets the address first"
        # SNI and the certificate's name check use the host name; the pool (and so
        # the socket) uses the address. The pool key holds both.
        pool_kwargs["server_hostname"] = host
        return self.poolmanager.connection_from_host(
            host=address, port=port, scheme="https", pool_kwargs=pool_kwargs
        )

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Certificates are always required; the trust is in our context only (requests
        would otherwise add its `ca_certs` to it on every connection)."""
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        """The socket goes to an address, so name the host explicitly."""
        request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]


def delivery_session(
    context: ssl.SSLContext, allow_private: bool, lookup: Lookup
) -> requests.Session:
    """A session for one delivery thread: https only, pinned, no proxies from the env."""
    session = requests.Session()
    session.trust_env = False
    session.adapters.clear()
    session.mount("https://", PinnedHTTPSAdapter(context, allow_private, lookup))
    return session

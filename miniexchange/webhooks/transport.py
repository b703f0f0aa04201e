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
- The connection goes to the address that was checked (no second lookup a DNS
  rebinding could answer differently), while the `Host` header, SNI and the
  certificate check keep the host name.
- No proxy from the environment (`trust_env=False`), no redirects (the caller passes
  `allow_redirects=False`), no retries, `http://` not mounted at all.

Residual risks, accepted: name resolution (`getaddrinfo`) has no timeout of its own, so
a hanging resolver can hold one delivery thread past `WEBHOOK_TIMEOUT`; only the first
vetted address is tried (no fallback to the next one when it is unreachable).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connectionpool import HTTPConnectionPool

Resolver = Callable[[str, int], list[str]]
"""(host, port) -> the addresses it resolves to, as text; raises OSError on failure."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """The delivery was not sent: its host resolves to a non-public address."""


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
    """Connects to the vetted address of the URL's host, with our own `SSLContext`."""

    def __init__(self, context: ssl.SSLContext, allow_private: bool, resolve: Resolver) -> None:
        self._context = context
        self._allow_private = allow_private
        self._resolve = resolve
        # One delivery at a time per thread: one kept connection per (address, host).
        super().__init__(pool_connections=32, pool_maxsize=1, max_retries=0)

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
        address = vetted_address(host, port, self._allow_private, self._resolve)
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
    context: ssl.SSLContext, allow_private: bool, resolve: Resolver = resolve_host
) -> requests.Session:
    """A session for one delivery thread: https only, pinned, no proxies from the env."""
    session = requests.Session()
    session.trust_env = False
    session.adapters.clear()
    session.mount("https://", PinnedHTTPSAdapter(context, allow_private, resolve))
    return session

"""A local HTTPS webhook receiver that records every delivery (tests), or prints it (you).

Its certificate comes from a throwaway `trustme` CA; the exchange trusts that CA when
`WEBHOOK_CA_BUNDLE` names the CA's PEM file, and may post to 127.0.0.1 only with
`WEBHOOK_ALLOW_PRIVATE=true`. To watch deliveries while you try the API:

    .venv/bin/python -m tests.e2e.receiver --port 9443 --secret s3cret

It prints the settings to start the exchange with, then each delivery as it arrives.
In tests, `hold(path)` makes the next delivery to `path` wait inside the handler
until the test releases it, to show who waits for a hung receiver (nobody else);
`never_answer(path)` makes every delivery to `path` get no answer at all, and notes when
the sender gives up and hangs up.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

HOST = "127.0.0.1"
NAMES = (HOST, "localhost", "receiver.test")
"""The certificate's names: tests may map `receiver.test` to 127.0.0.1 themselves."""

HOLD_LIMIT_S = 60.0
"""A held handler gives up after this long, so a failing test cannot hang the receiver."""

SILENCE_LIMIT_S = 300.0
"""A silent handler closes the connection after this long (or at `release_all`)."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Gate:
    """Holds one delivery inside the handler: `entered` once it arrived, `left` once
    answered; it is answered after `release` is set."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    left: threading.Event = field(default_factory=threading.Event)


@dataclass
class Silence:
    """Deliveries to one path are never answered: `arrived` once one has been read,
    `hung_up` once the sender closed a connection it had sent one on (it gave up)."""

    arrived: threading.Event = field(default_factory=threading.Event)
    hung_up: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def hanging(self) -> bool:
        """A delivery arrived and its sender still waits for the answer."""
        return self.arrived.is_set() and not self.hung_up.is_set()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does with `X-Signature`: HMAC-SHA256 of the exact body bytes."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


class Receiver:
    def __init__(
        self, directory: Path, port: int = 0, on_delivery: Callable[[Received], None] | None = None
    ) -> None:
        """Writes the CA's PEM to `directory/webhook-ca.pem` (see `ca_path`)."""
        ca = trustme.CA()
        self.ca_path = directory / "webhook-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*NAMES).configure_cert(context)
        self._received: list[Received] = []
        self._arrived = threading.Condition()
        self._gates: dict[str, list[Gate]] = {}  # waiting for their delivery
        self._taken: list[Gate] = []  # holding one
        self._silences: dict[str, Silence] = {}
        self._statuses: dict[str, int] = {}
        self._on_delivery = on_delivery
        self._server = _Server((HOST, port), self._handler_class())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def release_all(self) -> None:
        """Let every held delivery go (a test's teardown: no gate outlives its test)."""
        with self._arrived:
            gates = [gate for waiting in self._gates.values() for gate in waiting]
            gates += self._taken
            self._gates.clear()
            silences = list(self._silences.values())
            self._silences.clear()
        for gate in gates:
            gate.release.set()
        for silence in silences:
            silence.release.set()

    def stop(self) -> None:
        self.release_all()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str, host: str = HOST) -> str:
        return f"https://{host}:{self.port}{path}"

    # -- what the tests control and read ---------------------------------------------

    def answer(self, path: str, status: int) -> None:
        """Answer deliveries to `path` with `status` (default 200)."""
        self._statuses[path] = status

    def hold(self, path: str) -> Gate:
        """Hold the next delivery to `path` in the handler until the gate is released."""
        gate = Gate()
        with self._arrived:
            self._gates.setdefault(path, []).append(gate)
        return gate

    def never_answer(self, path: str) -> Silence:
        """Read every delivery to `path` and answer none: the connection stays open
        until the sender closes it (or `release_all`)."""
        silence = Silence()
        with self._arrived:
            self._silences[path] = silence
        return silence

    def received(self, path: str) -> list[Received]:
        with self._arrived:
            return [r for r in self._received if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        """The first `count` deliveries to `path`, once they have arrived."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: sum(r.path == path for r in self._received) >= count, timeout
            )
            arrived = [r for r in self._received if r.path == path]
        assert len(arrived) >= count, f"{len(arrived)} of {count} deliveries to {path} arrived"
        return arrived[:count]

    # -- the server side -------------------------------------------------------------

    def _arrive(self, received: Received) -> Silence | None:
        """Record a delivery; hold it if a gate waits for it. A `Silence` (returned):
        the delivery gets no answer."""
        with self._arrived:
            self._received.append(received)
            gates = self._gates.get(received.path)
            gate = gates.pop(0) if gates else None
            if gate is not None:
                self._taken.append(gate)
            self._arrived.notify_all()
            silence = self._silences.get(received.path)
        if silence is not None:
            return silence
        if self._on_delivery is not None:
            self._on_delivery(received)
        if gate is not None:
            gate.entered.set()
            gate.release.wait(HOLD_LIMIT_S)
            gate.left.set()
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the sender may reuse connections

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                silence = receiver._arrive(Received(self.path, headers, body))
                if silence is not None:
                    self.close_connection = True
                    _wait_for_hang_up(self.connection, silence)
                    return
                status = receiver._statuses.get(self.path, 200)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url(self.path + "/redirected"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: deliveries are recorded, or printed by `main`

        return Handler


@contextmanager
def receiving(directory: Path) -> Iterator[Receiver]:
    """A started receiver, stopped (every held delivery let go) however the block ends."""
    running = Receiver(directory).start()
    try:
        yield running
    finally:
        running.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many senders at once: none waits for a SYN retransmit


def _wait_for_hang_up(connection: socket.socket, silence: Silence) -> None:
    """Answer nothing; note when the sender closes the connection (reads EOF)."""
    silence.arrived.set()
    waited = 0.0
    while not silence.release.is_set() and waited < SILENCE_LIMIT_S:
        readable, _, _ = select.select([connection], [], [], 0.05)
        waited += 0.05
        if readable:
            try:
                if connection.recv(1):
                    continue  # whatever it sends, it still gets no answer
            except OSError:
                pass
            silence.hung_up.set()
            return


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the webhook deliveries it receives.")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--secret", help="the exchange's WEBHOOK_SECRET, to check X-Signature")
    options = parser.parse_args()

    def show(received: Received) -> None:
        headers = received.headers
        line = f"{headers.get('x-event-type')} delivery {headers.get('x-delivery-id')}"
        if options.secret:
            valid = verify_signature(options.secret, received.body, headers.get("x-signature"))
            line += f" (signature {'valid' if valid else 'INVALID'})"
        print(f"{line}\n  {received.body.decode()}", flush=True)

    directory = Path(tempfile.mkdtemp(prefix="webhook-receiver-"))
    receiver = Receiver(directory, options.port, show).start()
    print(
        "Start the exchange with:\n"
        f"  WEBHOOK_CA_BUNDLE={receiver.ca_path} WEBHOOK_ALLOW_PRIVATE=true"
        + (f" WEBHOOK_SECRET={options.secret}" if options.secret else "")
        + f" make run\nSubscribe with a URL such as {receiver.url('/hooks')}\n",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()

"""Batches between processes: the worker's outbox and the worker → sequencer part.

A Ray call costs about 650 µs of CPU on each side (975 µs for an awaiting event loop)
whatever it carries, while each order in it costs a few µs (docs/ray.md, "Capacity"), so
every cross-process hop carries a batch, and batches grow with load:

- `Outbox`: one per destination in each ingress worker. Requests queued during one pass
  of the event loop leave as one call; at most two calls are in flight, and what comes
  meanwhile waits for the next call (exchange-core's "smart batching").
- `encode_part` / `decode_part`: a worker's writes to the sequencer as one orjson
  document, not pickled tuples: measured (bench/results/ray_hop.md, 100 orders a call)
  8.4 / 9.4 µs of CPU per order for the caller / the called actor against 18.4 / 14.8
  pickled, about half. It carries a format number: workers and the (detached)
  sequencer are started apart and may run different code, and a mismatch must be a
  clear refusal, not a misread.

Nothing here imports Ray: a destination is any callable whose result can be awaited
(an async function in the tests, a Ray actor method's `ObjectRef` later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

import orjson

from miniexchange.model.commands import RegisterBroker, SubmitOrder
from miniexchange.model.idempotency import Key

# -- the outbox ---------------------------------------------------------------------

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
V = TypeVar("V")

IN_FLIGHT = 2  # calls per destination: one being answered while the next one fills


class Send(Protocol[T_contra]):
    """One call to a destination: the answers come back in the order of `batch`, one
    per request; an answer that is an exception is that request's refusal."""

    def __call__(self, batch: Sequence[T_contra], /) -> Awaitable[Sequence[Any]]: ...


class BatchAnswerError(RuntimeError):
    """A destination answered a batch with the wrong number of answers: which answer is
    whose is unknown, so every request of the batch fails with this."""


class Outbox(Generic[T]):
    """One destination's outbox, on one event loop (not thread-safe: the loop's only)."""

    def __init__(self, send: Send[T], in_flight: int = IN_FLIGHT) -> None:
        self._send = send
        self._limit = in_flight
        self._in_flight = 0
        self._queued: list[tuple[T, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._calls: set[asyncio.Task[None]] = set()  # referenced until done

    async def request(self, item: T) -> Any:
        """Queue `item` for the next call and await its answer (raising a refusal, or
        the failure of the call that carried it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((item, future))
        self._schedule_flush(loop)
        value = await future
        if isinstance(value, BaseException):
            # As in the HTTP bridge's `answer`: the raised exception's traceback holds this
            # frame, so nothing that holds the exception may stay among its locals.
            del future, item
            try:
                raise value
            finally:
                del value
        return value

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first request of a pass schedules the flush: it runs after every request
        of this pass is queued, so they all leave in one call."""
        if self._queued and not self._flush_scheduled and self._in_flight < self._limit:
            self._flush_scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        # A request cancelled while it waited (its client went away) is not sent.
        queued = [(item, future) for item, future in self._queued if not future.done()]
        self._queued = []
        if not queued:
            return
        self._in_flight += 1
        call = loop.create_task(self._call(loop, queued))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(
        self, loop: asyncio.AbstractEventLoop, queued: list[tuple[T, asyncio.Future[Any]]]
    ) -> None:
        futures = [future for _, future in queued]
        try:
            answers = await self._send([item for item, _ in queued])
            if len(answers) != len(futures):
                raise BatchAnswerError(
                    f"{len(answers)} answers to a batch of {len(futures)} requests"
                )
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as failure:
            answers = [failure] * len(futures)
        finally:
            self._in_flight -= 1
            self._schedule_flush(loop)  # what waited meanwhile leaves now
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():  # cancelled after it left: its answer has no taker
                future.set_result(answer)


# -- the worker → sequencer part ------------------------------------------------------

FORMAT = 2  # the part's format number; a decoder refuses any other (2: writes' keys)


class CancelOrder(NamedTuple):
    """`DELETE /orders/{id}`; the worker has checked that the caller may see the order."""

    order_id: str


class IssueCredentials(NamedTuple):
    """`POST /brokers/{id}/api_key` or `/webhook_secret`."""

    broker_id: str
    api_key: bool
    webhook_secret: bool


class SubscribeWebhooks(NamedTuple):
    """`POST /webhooks`: one subscription per event."""

    broker_id: str
    url: str
    events: tuple[str, ...]


class UnsubscribeWebhook(NamedTuple):
    """`DELETE /webhooks/{id}`; with `owner`, only that broker's subscription may go."""

    webhook_id: str
    owner: str | None = None


WriteCommand: TypeAlias = (
    SubmitOrder
    | CancelOrder
    | RegisterBroker
    | IssueCredentials
    | SubscribeWebhooks
    | UnsubscribeWebhook
)


class Write(NamedTuple):
    """One request's command as a worker sends it. `number` is the worker's own, never
    reused: a worker whose call failed sends the same write again under the same number,
    and the sequencer recognises it. `request_id` is the request's X-Request-Id, which
    the webhook logs carry."""

    number: int
    command: WriteCommand
    request_id: str | None = None
    key: Key | None = None
    """The request's `Idempotency-Key` (endpoint, key): the sequencer can then answer a
    retry of it whose first worker died before keeping the answer."""


class Part(NamedTuple):
    """What one worker sends the sequencer in one call."""

    worker: str
    writes: tuple[Write, ...]


class BatchFormatError(ValueError):
    """A part that is not a valid document of this format: refused whole."""


def encode_part(part: Part) -> bytes:
    """`{"format": 2, "worker": ..., "writes": [[number, request_id, key, kind, *fields]]}`
    (`key`: `[endpoint, key]` or null).

    Each command is a flat array of its fields in declaration order, led by its kind;
    money is integer cents, times integer microseconds: no float anywhere, and any
    64-bit integer comes back exact (orjson refuses a larger one)."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "worker": part.worker,
            "writes": [
                [write.number, write.request_id, write.key, *encode_command(write.command)]
                for write in part.writes
            ],
        }
    )


def decode_part(document: bytes) -> Part:
    """The part `encode_part` made, equal to it; anything else is a `BatchFormatError`."""
    try:
        value = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise BatchFormatError(f"a batch part is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BatchFormatError("a batch part is not an object")
    if value.get("format") != FORMAT:
        raise BatchFormatError(
            f"a batch part of format {value.get('format')!r}; this code reads format {FORMAT}"
        )
    writes = value.get("writes")
    if not isinstance(writes, list):
        raise BatchFormatError("a batch part's writes are not an array")
    return Part(_str(value.get("worker")), tuple(_decode_write(write) for write in writes))


_ORDER = "order"  # a limit or market order: `SubmitOrder.type` says which
_CANCEL = "cancel"
_REGISTER = "register"
_ISSUE = "issue"
_SUBSCRIBE = "subscribe"
_UNSUBSCRIBE = "unsubscribe"


def encode_command(command: WriteCommand) -> list[Any]:
    """A write command as a flat array led by its kind (also inside the shards' parts)."""
    # orjson writes plain tuples but refuses their subclasses: NamedTuples become lists.
    if isinstance(command, SubmitOrder):
        return [_ORDER, *command]
    if isinstance(command, CancelOrder):
        return [_CANCEL, *command]
    if isinstance(command, RegisterBroker):
        holdings = [list(holding) for holding in command.holdings]
        return [_REGISTER, command.broker_id, command.initial_cash, holdings]
    if isinstance(command, IssueCredentials):
        return [_ISSUE, *command]
    if isinstance(command, SubscribeWebhooks):
        return [_SUBSCRIBE, command.broker_id, command.url, list(command.events)]
    if isinstance(command, UnsubscribeWebhook):
        return [_UNSUBSCRIBE, *command]
    raise TypeError(f"not a write command: {command!r}")


def _decode_write(write: Any) -> Write:
    if not isinstance(write, list) or len(write) < 4:
        raise BatchFormatError(f"a write is not [number, request_id, key, kind, ...]: {write!r}")
    number, request_id, key, kind, *fields = write
    command = decode_command(kind, fields)
    return Write(_int(number), command, _optional(_str, request_id), _optional(_key, key))


def _key(value: Any) -> Key:
    if not (isinstance(value, list) and len(value) == 2):
        raise BatchFormatError(f"an Idempotency-Key is not [endpoint, key]: {value!r}")
    return _str(value[0]), _str(value[1])


def decode_command(kind: Any, fields: list[Any]) -> WriteCommand:
    """The command `encode_command` made of `[kind, *fields]`, or a `BatchFormatError`."""
    return decoded_by_kind("write", "a write", _DECODERS, [kind, *fields])  # type: ignore[no-any-return]


def decoded_by_kind(kind: str, what: str, decoders: dict[str, Callable[..., Any]], row: Any) -> Any:
    """`[kind, *fields]` by the decoder of its kind (every document of the cluster's
    formats lays its values out so); an unknown kind or a wrong count of fields refused."""
    if not isinstance(row, list) or not row:
        raise BatchFormatError(f"{what} is not [kind, ...]: {row!r}")
    name, *fields = row
    decode = decoders.get(name) if isinstance(name, str) else None
    if decode is None:
        raise BatchFormatError(f"unknown {kind} kind {name!r}")
    try:
        return decode(*fields)
    except TypeError:  # a wrong number of fields
        raise BatchFormatError(f"{what} of kind {name!r} with wrong fields: {fields!r}") from None


def _decode_order(
    type_: Any,
    broker_id: Any,
    document_number: Any,
    side: Any,
    symbol: Any,
    quantity: Any,
    price: Any,
    expires_at: Any,
) -> SubmitOrder:
    return SubmitOrder(
        _str(type_),
        _str(broker_id),
        _str(document_number),
        _str(side),
        _str(symbol),
        _int(quantity),
        _optional(_int, price),
        _optional(_int, expires_at),
    )


def _decode_cancel(order_id: Any) -> CancelOrder:
    return CancelOrder(_str(order_id))


def _decode_register(broker_id: Any, initial_cash: Any, holdings: Any) -> RegisterBroker:
    return RegisterBroker(
        _str(broker_id),
        _int(initial_cash),
        tuple((_str(symbol), _int(quantity)) for symbol, quantity in _pairs(holdings)),
    )


def _decode_issue(broker_id: Any, api_key: Any, webhook_secret: Any) -> IssueCredentials:
    return IssueCredentials(_str(broker_id), _bool(api_key), _bool(webhook_secret))


def _decode_subscribe(broker_id: Any, url: Any, events: Any) -> SubscribeWebhooks:
    return SubscribeWebhooks(_str(broker_id), _str(url), tuple(_str(e) for e in _list(events)))


def _decode_unsubscribe(webhook_id: Any, owner: Any) -> UnsubscribeWebhook:
    return UnsubscribeWebhook(_str(webhook_id), _optional(_str, owner))


_DECODERS: dict[str, Callable[..., WriteCommand]] = {
    _ORDER: _decode_order,
    _CANCEL: _decode_cancel,
    _REGISTER: _decode_register,
    _ISSUE: _decode_issue,
    _SUBSCRIBE: _decode_subscribe,
    _UNSUBSCRIBE: _decode_unsubscribe,
}


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise BatchFormatError(f"expected a string, got {value!r}")
    return value


def _int(value: Any) -> int:
    # bool is an int to Python, and a float here would be a rounding waiting to happen
    if type(value) is not int:
        raise BatchFormatError(f"expected an integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BatchFormatError(f"expected true or false, got {value!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise BatchFormatError(f"expected an array, got {value!r}")
    return value


def _pairs(value: Any) -> list[list[Any]]:
    pairs = _list(value)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise BatchFormatError(f"expected [symbol, quantity] pairs, got {value!r}")
    return pairs


def _optional(check: Callable[[Any], V], value: Any) -> V | None:
    return None if value is None else check(value)

"""`GET /stocks/{symbol}/stream`: one symbol's book and trades as Server-Sent Events.

How news travels, and why a slow reader never slows matching (one module a part):

- `stream_fanout.SymbolFanout`: woken by the symbol's `SymbolFeed` on the event loop,
  renders each new trade once and offers it to every subscriber; when the book changed
  it reads ONE L2 snapshot (depth 10) at most every 200 ms and offers it.
- `stream_subscriber.Subscriber`: one open stream. It keeps only the latest book and a
  bounded backlog of trades; past that its stream is closed and the reader reconnects
  to a fresh book. Nothing waits for a reader.
- `stream_hub.StreamHub`: admission (one stream past `MAX_STREAMS` is a 503
  `overloaded`, as a connection past `MAX_CONNECTIONS` is), the body fed to Falcon's
  SSE (`resp.sse`), a keep-alive comment every 15 s, and the close of every stream on
  SIGTERM/SIGINT, before the server waits for in-flight requests.
- `stream_guard.guard_stream` (called by the app for a `/stream` path): sees the
  reader's disconnect at once, and lets a stream cancelled in a write that never
  completes end quietly.
- `sse`: the wire format, rendered once for every reader.
"""

from __future__ import annotations

import falcon
import falcon.asgi

from miniexchange.actors.seam import Engine
from miniexchange.http.errors import overloaded
from miniexchange.http.market import SymbolResource
from miniexchange.http.stream_hub import StreamHub
from miniexchange.http.stream_subscriber import Subscriber
from miniexchange.http.timeouts import STREAMING


class StreamResource(SymbolResource):
    def __init__(self, engine: Engine, hub: StreamHub) -> None:
        super().__init__(engine)
        self.hub = hub

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, symbol: str
    ) -> None:
        if self.hub.full():  # a connection limit: before anything else
            raise overloaded()
        self.check_known(symbol)  # 404 symbol_not_found before anything streams
        subscriber = Subscriber(symbol, req.path)
        self.hub.admit(subscriber)
        req.scope[STREAMING] = subscriber  # no WRITE_TIMEOUT; seen by `guard_stream`
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
        resp.sse = self.hub.events(subscriber)

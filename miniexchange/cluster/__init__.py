"""ENGINE=ray, being built (docs/ray.md): the Ray side of the exchange.

Today: `head` starts and stops a local, loopback-only Ray head and connects a process
to it. Nothing here imports `ray` at import time: the default install has no Ray.
"""

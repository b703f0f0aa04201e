"""miniexchange's measuring instruments (issue 6): `python -m bench` / `make bench`.

The benchmarks live beside the code, not in the test suite, because they measure speed
and memory on one machine, which a pass/fail test run cannot judge. Parts:

- `bench.engine`: the matching engine without HTTP, through the model alone and through
  the running actors, on one seeded random order flow (`bench.flow`);
- `bench.http_load`: the real server as `make run` starts it, loaded by `wrk`;
- `bench.memory`: the server's RSS per resting order;
- `bench.profile`: an optional py-spy profile of the server under the `limit` load.

Each part returns table rows (`bench.report.Row`); `bench.cli` prints one markdown table
and writes it to `bench/results/latest.md`.
"""

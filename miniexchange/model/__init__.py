"""The functional core: plain data and pure functions; no threads, no I/O, no clock.

Money is integer cents, quantities integer shares, timestamps integer microseconds
since the Unix epoch (UTC). Conversion to and from JSON happens only in `http`.
"""

"""The write-ahead journal: facts are durable before anyone hears of them (docs/design.md)."""

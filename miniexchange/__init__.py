"""miniexchange: a mini stock exchange served over REST."""

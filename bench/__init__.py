"""`make bench`: the load generator, targets and scenarios of issue 6 (see bench/__main__.py)."""

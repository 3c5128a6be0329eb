"""The quiet phase: every finished trial timed again after the search, round-robin with the baseline,
on an otherwise idle node."""


"""The benchmark suite: one command (``scripts/bench``), results as JSON and Markdown."""

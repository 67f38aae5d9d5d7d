"""The simulator's Magic Hour dialect (``/v1/...``)."""

"""The simulator's flux0-style dialect (``/flux0/...``): SSE runs."""

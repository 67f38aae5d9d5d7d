"""The simulator's Pixy dialect (``/pixy/...``): routes, and each item's timeline."""

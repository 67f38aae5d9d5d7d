"""The simulator's PiXYZ Scheduler dialect (``/pixyz/...``): routes, processes and
replies.
"""

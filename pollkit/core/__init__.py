"""Decisions without I/O: when to poll next, what to retry. Pure functions of their arguments
(state, the time passed in, a random source passed in), so they are tested without sockets,
sleeps or a clock.
"""

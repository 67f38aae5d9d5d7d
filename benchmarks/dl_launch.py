"""Launcher of the download benchmark: runs one client and prints what ``wait4`` says about it.

    python -I -S benchmarks/dl_launch.py COMMAND [ARG ...]

Prints ``wall_seconds cpu_seconds max_rss_kib exit_code`` on its standard output; the client's
standard output goes to /dev/null, its standard error is this process's.

Why a launcher: Linux carries the peak RSS of the process that spawns a child into the child's
``ru_maxrss`` (``exec`` records the old address space's high-water mark, and with ``vfork``
that is the parent's). Spawned straight from the benchmark, every client would report at least
the benchmark's own peak (~90 MB). This process stays near 8 MB (no site, no imports beyond
``os`` and ``time``), below any client's own footprint.
"""

import os
import sys
import time


def main() -> None:
    argv = sys.argv[1:]
    to_null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=to_null)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    cpu = usage.ru_utime + usage.ru_stime
    print(f"{wall:.6f} {cpu:.6f} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    main()

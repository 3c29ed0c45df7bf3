"""Run a command under a child subreaper, so that every process it leaves behind is adopted and waited for here.

``python tests/reaper.py CMD...`` starts CMD in a session of its own and prints its pid; then, once CMD and every
process descended from it have exited, one line: CMD's exit status, the ``time.monotonic()`` at which CMD exited
and the one at which the last of its descendants did (``CLOCK_MONOTONIC`` is the same clock in every process).
An orphan that never exits therefore keeps this process running: that is what the shutdown tests look for.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    child = subprocess.Popen(argv, start_new_session=True)
    print(child.pid, flush=True)
    status, exited_at = None, None
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:  # no child left, adopted ones included
            break
        if pid == child.pid:
            status, exited_at = os.waitstatus_to_exitcode(wait_status), time.monotonic()
    child.returncode = status  # reaped above: keep Popen from waiting for it again
    print(status, exited_at, time.monotonic(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

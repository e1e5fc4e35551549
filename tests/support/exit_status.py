"""Run a program and record its exit status in a file: ``python exit_status.py FILE PROG [ARGS…]``.

tmux 3.3 sometimes marks a pane dead without ever filling ``#{pane_dead_status}`` (the pty closed
before the child was reaped), so :class:`tests.support.tmux.TmuxTerminal` runs its program under
this wrapper. Terminal-generated SIGINT/SIGQUIT reach the program (same process group); the wrapper
ignores them and exits with the program's status (128 + N for a signal, like a shell).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main() -> int:
    path, argv = sys.argv[1], sys.argv[2:]
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    proc = subprocess.Popen(argv, preexec_fn=_default_signals)
    code = proc.wait()
    status = 128 - code if code < 0 else code
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(str(status))
    os.replace(tmp, path)
    return status


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())

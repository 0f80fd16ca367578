"""Run a command and stop it, with everything in its process group, as soon as our stdin closes.

Usage: ``python remote_guard.py COMMAND [ARG...]`` (started by ``tools/launch.py``, not by hand).

The launcher starts every process of a distributed job through this guard, with a pipe on stdin that it never
writes. The pipe closes when the launcher closes it on purpose (it is stopping the job), when the launcher dies, or,
for a process started over ssh, when the ssh connection goes away: in every case the guard sends SIGTERM to its
process group (the command and whatever it started), then SIGKILL after ``GRACE_S``. SIGTERM, SIGHUP or SIGINT sent
to the guard does the same. The command itself gets /dev/null as stdin.

Exit status: the command's, or 128+N when the command was killed by signal N (the shell's convention).
"""
import os
import select
import signal
import subprocess
import sys

GRACE_S = 3.0


def _stop_group(command):
    """SIGTERM our process group, give ``command`` ``GRACE_S`` to exit, then SIGKILL the group (the guard included)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        command.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv):
    if not argv:
        sys.exit("usage: remote_guard.py COMMAND [ARG...]")
    try:
        command = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as error:
        sys.exit("remote_guard.py: cannot run %s: %s" % (argv[0], error.strerror))
    signalled = []
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: signalled.append(number))
    stdin = sys.stdin.fileno()
    while command.poll() is None:
        readable, _, _ = select.select([stdin], [], [], 0.2)
        if signalled or (readable and not os.read(stdin, 4096)):
            _stop_group(command)
    return 128 - command.returncode if command.returncode < 0 else command.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

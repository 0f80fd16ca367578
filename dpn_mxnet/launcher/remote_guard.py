"""Run a command and stop it, with everything in its process group, as soon as our stdin closes.

Usage: ``python remote_guard.py COMMAND [ARG...]`` (started by ``tools/launch.py``, not by hand).

The launcher starts every process of a distributed job through this guard, with a pipe on stdin that it never
writes. The pipe closes when the launcher closes it on purpose (it is stopping the job), when the launcher dies, or,
for a process started over ssh, when the ssh connection goes away: in every case the guard sends SIGTERM to its
process group (the command and whatever it started), then SIGKILL after ``GRACE_S``. SIGTERM, SIGHUP or SIGINT sent
to the guard does the same. The command itself gets /dev/null as stdin, and the kernel kills it if the guard
dies (``PR_SET_PDEATHSIG``), so that nothing is orphaned when the guard itself is killed.

Exit status: the command's, or 128+N when the command was killed by signal N (the shell's convention).
"""
import ctypes
import functools
import os
import select
import signal
import subprocess
import sys

GRACE_S = 3.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_group(command):
    """SIGTERM our process group, give ``command`` ``GRACE_S`` to exit, then SIGKILL the group (the guard included)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        command.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _die_with(guard):
    """Run in the command's process before it starts: the kernel SIGKILLs it when the guard dies, even by SIGKILL
    (the process group is then left without the guard that would stop it)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != guard:  # the guard died before prctl
        os._exit(128 + signal.SIGKILL)


def main(argv):
    if not argv:
        sys.exit("usage: remote_guard.py COMMAND [ARG...]")
    try:
        command = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=functools.partial(_die_with, os.getpid()))
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

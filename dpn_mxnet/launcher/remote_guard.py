"""Run a command and stop it, with everything in its process group, as soon as our stdin closes or goes quiet.

Usage: ``python remote_guard.py COMMAND [ARG...]`` (started by ``tools/launch.py``, not by hand).

The launcher starts every process of a distributed job through this guard, with a pipe on stdin on which it
writes a heartbeat (a newline) every ``HEARTBEAT_S``. The pipe closes when the launcher closes it on purpose (it is
stopping the job), when the launcher dies, or, for a process started over ssh, when the ssh connection goes away;
it goes quiet when the connection is cut off without closing (a link down: the far end cannot tell). When the pipe
closes, or no heartbeat came for ``QUIET_S``, the guard sends SIGTERM to its process group (the command and
whatever it started), then SIGKILL after ``GRACE_S``. SIGTERM, SIGHUP or SIGINT sent
to the guard does the same. The command itself gets /dev/null as stdin, and the kernel kills it if the guard
dies (``PR_SET_PDEATHSIG``), so that nothing is orphaned when the guard itself is killed.

Every ``REPORT_S`` the guard also prints one report line on stderr for the launcher's stall watchdog
(``dpn_mxnet.launcher.watchdog``), which takes it out of the relayed output: ``@guard`` and a JSON object with the
command's process state from /proc (``T``: stopped), the TCP ports it listens on and, per peer address, how long its
unacknowledged data to that peer has been waiting for an acknowledgement the kernel already retransmitted for (a cut
link). Reading the kernel's TCP table is slow, so the sockets are looked at only while the command is idle (a busy
command is not waiting for a peer), at most every ``SCAN_S``; IPv4 only, like ps-lite.

Exit status: the command's, or 128+N when the command was killed by signal N (the shell's convention).
"""
import ctypes
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 3.0
HEARTBEAT_S = 5.0
QUIET_S = 30.0  # twice the launcher's ssh keepalive (its side of a cut-off connection ends after about 15 s)
REPORT_S = 1.0
SCAN_S = 5.0
IDLE_CPU = 0.2  # CPU seconds per second below which the command counts as idle
REPORT_MARKER = "@guard "
_TCP_LISTEN, _TCP_ESTABLISHED = "0A", "01"
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


def _sockets(pid):
    """The inodes of the sockets that process ``pid`` holds open."""
    inodes = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _endpoint(hex_address):
    """'0100007F:1F90' (/proc/net/tcp) -> '127.0.0.1:8080'; IPv6 addresses keep their hex form."""
    address, port = hex_address.split(":")
    if len(address) == 8:
        address = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "%s:%d" % (address, int(port, 16))


def _tcp(pid, inodes):
    """(listening endpoints, remote endpoints with unacknowledged data already retransmitted) of those sockets."""
    listening, stuck = [], []
    try:
        with open("/proc/%d/net/tcp" % pid) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[9] not in inodes:
                    continue
                if fields[3] == _TCP_LISTEN:
                    listening.append(_endpoint(fields[1]))
                elif fields[3] == _TCP_ESTABLISHED and int(fields[4].split(":")[0], 16) and int(fields[6], 16):
                    stuck.append(_endpoint(fields[2]))
    except OSError:
        pass
    return listening, stuck


class Reporter:
    """Builds the report lines about one command; remembers since when each peer has been unreachable."""

    def __init__(self, pid):
        self.pid = pid
        self.listening, self.stuck_since = [], {}
        self.cpu, self.at, self.scanned = 0.0, time.monotonic(), float("-inf")

    def _stat(self):
        """(process state, CPU seconds used so far) of the command."""
        try:
            with open("/proc/%d/stat" % self.pid) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return "gone", self.cpu
        return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def line(self):
        state, cpu = self._stat()
        now = time.monotonic()
        idle = cpu - self.cpu < IDLE_CPU * (now - self.at)
        self.cpu, self.at = cpu, now
        if not idle:
            self.stuck_since = {}
        elif now - self.scanned >= SCAN_S:
            self.scanned = now
            self.listening, stuck = _tcp(self.pid, _sockets(self.pid))
            self.stuck_since = {peer: self.stuck_since.get(peer, now) for peer in stuck}
        report = {"state": state, "listen": self.listening,
                  "stuck": {peer: round(now - since, 1) for peer, since in self.stuck_since.items()}}
        return REPORT_MARKER + json.dumps(report, separators=(",", ":")) + "\n"


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
    reporter, reported, heard = Reporter(command.pid), 0.0, time.monotonic()
    while command.poll() is None:
        readable, _, _ = select.select([stdin], [], [], 0.2)
        if readable and os.read(stdin, 4096):
            heard, readable = time.monotonic(), False
        if signalled or readable or time.monotonic() - heard > QUIET_S:
            _stop_group(command)
        elif time.monotonic() - reported >= REPORT_S:
            reported = time.monotonic()
            try:
                os.write(sys.stderr.fileno(), reporter.line().encode())
            except OSError:  # the launcher is gone: stdin closes too, and the loop stops the command
                pass
    return 128 - command.returncode if command.returncode < 0 else command.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

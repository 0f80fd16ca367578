"""Supervise the processes of a distributed job: relay their output and stop the whole job at the first failure.

``Supervisor`` stands in for the ``subprocess`` module inside ``dmlc_tracker`` (``call`` and ``check_call`` are all
the tracker uses). Every command the tracker starts (scheduler, servers, workers, local or over ssh) runs in its own
session with a pipe on stdin, and its output is relayed line by line behind a ``[role rank@host]`` prefix. The first
non-zero exit prints one line naming the process, its exit status and its last line on stderr (the cause it
printed, e.g. ``error: ...``), then the job is stopped: every stdin pipe is closed
(``dpn_mxnet.launcher.remote_guard`` then stops the process, here or at the far end of an ssh connection) and
whatever is still running after ``STOP_GRACE_S`` is killed with its process group. Until then every stdin gets the
guards' heartbeat, so that a process whose host is cut off from the launcher stops by itself.

The kvstore rank of a worker is assigned by ps-lite, so only the worker knows it: training scripts call
``announce_rank(kv)`` right after creating the kvstore, and the supervisor reads the marker line it prints. It also
takes the workers' progress markers (``progress.py``) and the guards' reports out of the output; with a stall
timeout, a ``watchdog.Watchdog`` ends a job that stopped making progress.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from .progress import DONE_MARKER, PROGRESS_MARKER
from .remote_guard import HEARTBEAT_S, REPORT_MARKER
from .watchdog import Watchdog

RANK_MARKER = "@launch: kvstore rank"
# Exit statuses of a job's process that mean a restart would meet the same failure: argparse's usage errors, and the
# training script's errors in its input or configuration (e.g. an undecodable record with --bad-records stop)
USAGE_ERROR_STATUS, INPUT_ERROR_STATUS = 2, 3
RECURRING = {USAGE_ERROR_STATUS: "a usage error", INPUT_ERROR_STATUS: "an error in its input or configuration"}
STOP_GRACE_S = 10.0       # remote_guard gives its command 3 s after SIGTERM; ssh needs a little more
FINISH_TIMEOUT_S = 30.0   # how long processes may outlive the scheduler at the normal end of a job
DRAIN_S = 2.0             # how long to wait for the last output of a process that has exited
SETTLE_S = 1.0            # failures this close together are one event, named after its likely cause
_ROLE_ORDER = {"worker": 0, "server": 1, "scheduler": 2}
# ssh's keepalive on every connection to a host: one that stops answering (frozen, or its link gone) ends the
# connection, with ssh's exit status 255, after about interval x count seconds
SSH_KEEPALIVE = "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"
SSH_LOST = 255  # ssh's exit status when the connection fails

_SSH_ROLE = re.compile(r"export DMLC_ROLE=(\w+);")
_SSH_HOST = re.compile(r"export DMLC_NODE_HOST=(\S+);")
_SSH_PORT = re.compile(r" -p (\d+) ")
_MARKER = re.compile(re.escape(RANK_MARKER).encode() + rb" (\d+)")
_PROGRESS = re.compile(re.escape(PROGRESS_MARKER).encode() + rb" (\d+)\n?\Z")
_DONE = DONE_MARKER.encode() + b"\n"
_REPORT = REPORT_MARKER.encode()


def announce_rank(kv):
    """Print the line that tells the launcher this worker's kvstore rank (nothing for non-distributed kvstores)."""
    if kv.type.startswith("dist"):
        print("%s %d of %d, pid %d" % (RANK_MARKER, kv.rank, kv.num_workers, os.getpid()), flush=True)


def describe_exit(returncode):
    """'exit code 3', 'killed by SIGKILL' (negative codes) or 'exit code 137 (killed by SIGKILL)' (128+N)."""
    if returncode < 0:
        return "killed by %s" % _signal_name(-returncode)
    if returncode > 128 and _signal_name(returncode - 128):
        return "exit code %d (killed by %s)" % (returncode, _signal_name(returncode - 128))
    return "exit code %d" % returncode


def _killed_from_outside(returncode):
    """Whether an exit status means a kill by SIGKILL, SIGTERM, SIGINT or SIGHUP (then its last words are not the
    cause), directly or as 128+N."""
    number = -returncode if returncode < 0 else returncode - 128
    return number in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def identify(command, env):
    """(role, host) of a command started by dmlc_tracker, read from its environment or from its ssh command line."""
    if env and "DMLC_ROLE" in env:
        role = env["DMLC_ROLE"]
        host = env.get("DMLC_NODE_HOST") or (env.get("DMLC_PS_ROOT_URI") if role == "scheduler" else None)
        return role, host or "localhost"
    text = command if isinstance(command, str) else " ".join(command)
    role, host, port = _SSH_ROLE.search(text), _SSH_HOST.search(text), _SSH_PORT.search(text)
    if role and host:
        port = port.group(1) if port else "22"
        return role.group(1), host.group(1) + ("" if port == "22" else ":" + port)
    return text.split()[0], "localhost"  # e.g. the rsync of --sync-dst-dir


class JobProcess:
    """One process of the job as the tracker started it; ``rank`` is set once the worker announces it."""

    def __init__(self, popen, role, host):
        self.popen, self.role, self.host = popen, role, host
        self.rank = None
        self.returncode = self.exited = None
        self.progress_at = self.finished_at = None  # its last progress marker; its done marker or exit 0
        self.steps = 0
        self.report, self.report_at = {}, time.monotonic()  # its guard's last report, and when it came
        self.stopped_since = None
        self.last_error = None  # its last line on stderr: what it said before failing
        self.relays = []
        self.handled = threading.Event()  # set once its exit status has been acted upon

    @property
    def state(self):
        return self.report.get("state")

    def take_report(self, text):
        self.report, self.report_at = json.loads(text), time.monotonic()
        if self.state not in ("T", "t"):
            self.stopped_since = None
        elif self.stopped_since is None:
            self.stopped_since = self.report_at

    @property
    def prefix(self):
        rank = "" if self.rank is None else " %d" % self.rank
        return ("[%s%s@%s] " % (self.role, rank, self.host)).encode()

    @property
    def name(self):
        if self.rank is not None:
            return "%s rank %d on %s" % (self.role, self.rank, self.host)
        unknown = " (kvstore rank not announced yet)" if self.role == "worker" else ""
        return "%s on %s%s" % (self.role, self.host, unknown)


class Supervisor:
    """Starts, watches and stops the processes of one job; pass it where dmlc_tracker expects ``subprocess``."""

    def __init__(self, program="launch", stall_timeout=0):
        self.program = program
        self.failure = None
        self.recurring = None  # what the failure is, when a restart would meet it again (RECURRING)
        self.status = 1
        self.watchdog = Watchdog(self, stall_timeout) if stall_timeout else None
        self._processes = []
        self._failures = []
        self._lock = threading.Lock()
        self._stdin_lock = threading.Lock()  # the heartbeat writes to the stdin pipes that ``stop`` closes
        self._output_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._never = threading.Event()

    @property
    def stopping(self):
        return self._stopping.is_set()

    def call(self, args, shell=False, executable=None, env=None, **_ignored):
        """``subprocess.call`` for the tracker: run, relay, wait. After a failure it never returns (see ``_park``)."""
        process = self._start(args, shell, executable, env)
        returncode = process.returncode = process.popen.wait()
        process.exited = time.monotonic()
        if returncode == 0 and process.finished_at is None:
            process.finished_at = process.exited
        for relay in process.relays:
            relay.join(DRAIN_S)
        if returncode != 0:
            with self._lock:
                self._failures.append(process)
            time.sleep(SETTLE_S)
            self.stop(self._cause())
        process.handled.set()
        if self.stopping:
            self._park()
        return returncode

    def _cause(self):
        """The failure line for the failures so far. One failure brings down its peers within moments (ps-lite
        aborts a scheduler or server whose peer is gone), so the likely cause comes first: a process killed from
        outside or exiting with an error of its own before one that aborted, a worker before a server before the
        scheduler, then the first to exit."""
        with self._lock:
            process = min(self._failures, key=lambda p: (
                not (_killed_from_outside(p.returncode) or 0 < p.returncode <= 128),
                _ROLE_ORDER.get(p.role, len(_ROLE_ORDER)), p.exited))
        said = process.last_error if not _killed_from_outside(process.returncode) else None
        self.recurring = RECURRING.get(process.returncode)
        if process.returncode == SSH_LOST and str(process.popen.args).startswith("ssh "):
            said = "ssh lost the connection (the host stopped answering)"
        return "%s failed: %s%s" % (process.name, describe_exit(process.returncode), ": " + said if said else "")

    # A non-zero exit stops the job and never returns, so check_call has nothing left to raise.
    check_call = call

    def processes(self):
        with self._lock:
            return list(self._processes)

    def stop(self, reason=None, status=1):
        """Stop the job (once): print ``reason`` as one line, close every stdin, SIGKILL what outlives the grace;
        ``status`` is what ``wait_stopped`` returns."""
        with self._lock:
            if self.stopping:
                return
            self._stopping.set()
            self.failure, self.status = reason, status
            processes = list(self._processes)
        if reason:
            with self._output_lock:
                print("%s: %s; stopping the job (%d processes)" % (self.program, reason, len(processes)),
                      file=sys.stderr, flush=True)
        with self._stdin_lock:
            for process in processes:
                try:
                    process.popen.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in processes:
            try:  # the whole group, also where its leader (the guard) is gone but what it started is not
                os.killpg(process.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.popen.wait()
        self._stopped.set()

    def finish(self, timeout=FINISH_TIMEOUT_S):
        """After the tracker has returned: 0 once every process has exited 0, 1 if the job failed or was stopped."""
        deadline = time.monotonic() + timeout
        for process in list(self._processes):
            if not process.handled.wait(max(0.0, deadline - time.monotonic())):
                self.stop("%s still running %.0f s after the scheduler finished" % (process.name, timeout))
                break
        return self.wait_stopped() if self.stopping else 0

    def wait_stopped(self):
        """Block until ``stop`` has finished; returns the launcher's exit status (1 unless ``stop`` said else)."""
        self._stopped.wait()
        return self.status

    def _start(self, args, shell, executable, env):
        if shell and isinstance(args, str) and args.startswith("ssh "):
            args = "ssh %s %s" % (SSH_KEEPALIVE, args[len("ssh "):])
        with self._lock:
            stopping = self.stopping
            if not stopping:
                popen = subprocess.Popen(args, shell=shell, executable=executable, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
                process = JobProcess(popen, *identify(args, env))
                self._processes.append(process)
                os.set_blocking(popen.stdin.fileno(), False)  # a full pipe must not hold the heartbeat up
                if len(self._processes) == 1:
                    threading.Thread(target=self._heartbeat, daemon=True).start()
                    if self.watchdog:
                        self.watchdog.start()
        if stopping:
            self._park()
        for stream, sink in ((popen.stdout, sys.stdout.buffer), (popen.stderr, sys.stderr.buffer)):
            relay = threading.Thread(target=self._relay, args=(process, stream, sink, stream is popen.stderr),
                                     daemon=True)
            relay.start()
            process.relays.append(relay)
        return process

    def _heartbeat(self):
        """Write a newline to every process's stdin (its guard's) every ``HEARTBEAT_S`` until the job stops."""
        while not self._stopping.wait(HEARTBEAT_S):
            with self._stdin_lock:
                for process in self.processes():
                    if process.popen.stdin.closed or process.popen.poll() is not None:
                        continue
                    try:
                        os.write(process.popen.stdin.fileno(), b"\n")
                    except OSError:  # gone, or its pipe full (an ssh that no longer forwards): nothing to keep alive
                        pass

    def _relay(self, process, stream, sink, errors):
        for line in iter(stream.readline, b""):
            marker = _MARKER.match(line)
            if marker:
                process.rank = int(marker.group(1))
            line = self._take_markers(process, line)
            if line is None:
                continue
            if errors and line.strip():
                process.last_error = line.decode(errors="replace").strip()
            with self._output_lock:
                try:
                    sink.write(process.prefix + line.rstrip(b"\n") + b"\n")
                    sink.flush()
                except OSError:  # our own output is gone (a closed pipe): keep draining, or the process blocks
                    pass
        stream.close()

    @staticmethod
    def _take_markers(process, line):
        """Record the watchdog's markers of ``line``; returns what is left to relay (None: nothing)."""
        progress = _PROGRESS.match(line)
        if progress:
            process.steps, process.progress_at = int(progress.group(1)), time.monotonic()
            return None
        if line == _DONE:
            process.finished_at = time.monotonic()
            return None
        at = line.find(_REPORT)  # the guard writes whole lines, but maybe after a partial line of its command
        if at < 0:
            return line
        try:
            process.take_report(line[at + len(_REPORT):])
        except ValueError:
            return line
        return line[:at] or None

    def _park(self):
        """Hold a tracker thread forever once the job is stopping.

        dmlc_tracker would otherwise retry, raise in its threads or wait for a scheduler that is gone; the launcher
        exits on its own (see tools/launch.py), and the tracker's threads are daemons.
        """
        self._never.wait()

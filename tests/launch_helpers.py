"""Run tools/launch.py the way a user does, watch its output while it runs, and find what is left of a job.

Tests tag a job by putting a unique word on its command line (e.g. ``--tag <word>`` for the script they launch): it
then shows up in the command line of every process of the job, local or over ssh, which ``job_processes`` finds.
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "tools" / "launch.py"
RANK_LINE = r"@launch: kvstore rank %d of \d+, pid (\d+)"


def new_tag():
    return "launchtest%s" % uuid.uuid4().hex[:12]


def job_processes(tag):
    """``[(pid, command line)]`` of the live processes whose command line contains ``tag`` (this one excluded)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        line = b" ".join(words).decode(errors="replace")
        if tag in line:
            found.append((int(entry.name), line))
    return found


class LauncherRun:
    """``python tools/launch.py ARGS`` started in the background; its output is collected line by line."""

    def __init__(self, args, env=None, cwd=REPO, prefix_command=()):
        """``prefix_command``: words in front of the launcher's command line (e.g. ``ip netns exec NAME``)."""
        environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
        self.args = [str(arg) for arg in args]
        self.popen = subprocess.Popen([*prefix_command, sys.executable, str(LAUNCH)] + self.args, cwd=str(cwd),
                                      env=environment,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self.stdout_lines, self.stderr_lines = [], []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.popen.stdout, self.stdout_lines),
                                               (self.popen.stderr, self.stderr_lines))]
        for reader in self._readers:
            reader.start()

    @property
    def stdout(self):
        return "".join(self.stdout_lines)

    @property
    def stderr(self):
        return "".join(self.stderr_lines)

    @property
    def returncode(self):
        return self.popen.returncode

    def wait_for(self, pattern, timeout=60):
        """The first match of ``pattern`` in an output line (stdout, then stderr, where logging goes); fails the
        test if the launcher ends first or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.stdout_lines + self.stderr_lines:
                    match = re.search(pattern, line)
                    if match:
                        return match
                if self.popen.poll() is not None and not any(reader.is_alive() for reader in self._readers):
                    self.fail("launcher exited (%s) before printing %r" % (self.popen.returncode, pattern))
                if time.monotonic() > deadline:
                    self.fail("no line matching %r within %d s" % (pattern, timeout))
                self._changed.wait(0.5)

    def worker_pid(self, rank, timeout=60):
        """The pid of the worker with kvstore ``rank``, from the line its ``announce_rank`` printed."""
        return int(self.wait_for(RANK_LINE % rank, timeout).group(1))

    def finish(self, timeout):
        """Wait for the launcher to exit and return its exit status; after ``timeout`` s stop it and fail."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGTERM)  # the launcher stops its job
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            self.fail("launcher still running after %d s" % timeout)
        for reader in self._readers:
            reader.join(10)
        return self.popen.returncode

    def report(self, message):
        """``message`` followed by the command and the end of its output, for assertion messages."""
        return "%s\ncommand: launch.py %s\n--- stdout\n%s--- stderr\n%s" % (
            message, " ".join(self.args), self.stdout[-6000:], self.stderr[-6000:])

    def fail(self, message):
        pytest.fail(self.report(message))

    def _collect(self, stream, lines):
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()


def run_launcher(args, timeout=120, env=None, cwd=REPO, prefix_command=()):
    """Run ``python tools/launch.py ARGS`` to the end (at most ``timeout`` s) and return the finished LauncherRun."""
    run = LauncherRun(args, env=env, cwd=cwd, prefix_command=prefix_command)
    run.finish(timeout)
    return run


@pytest.fixture
def job_tag():
    """A unique word to put on a job's command line; the test errors if a process still carries it afterwards."""
    tag = new_tag()
    yield tag
    leftovers = job_processes(tag)
    for pid, _ in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, "processes of the job left running:\n%s" % "\n".join("%d %s" % p for p in leftovers)

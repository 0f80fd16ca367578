"""A real OpenSSH server on 127.0.0.1 for the launcher tests, with keys made for the test and nothing in ~/.ssh.

Use the ``ssh_server`` fixture (``from sshd import ssh_server``): it starts ``/usr/sbin/sshd`` on a free high port
with a host key and a client key generated in a temporary folder, and puts an ``ssh`` wrapper first on PATH (in
``ssh_server.env``) that logs in with that key, non-interactively and without known_hosts. dmlc_tracker's ssh
launcher, its rsync and the launcher's host check all run a plain ``ssh``, so they go through the wrapper. Without
OpenSSH (or rsync, which the ssh launcher uses for --sync-dst-dir) the fixture skips, except under CI=true where
that is a failure (``.ci/run`` installs them).
"""
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from tools.dev.sshd import CONFIG, SSHD, free_port, make_credentials


@dataclass
class SSHServer:
    host: str
    port: int
    env: dict  # environment additions for the launcher: PATH with the ssh wrapper first

    @property
    def address(self):
        """The hostfile line for this server."""
        return "%s:%d" % (self.host, self.port)


def require(*programs):
    """Skip the test unless every program is installed (under CI=true, fail instead)."""
    missing = [program for program in programs if not shutil.which(program)]
    if missing:
        message = "%s not installed (apt-get install openssh-server openssh-client rsync)" % ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    require(SSHD, "ssh", "ssh-keygen", "rsync")
    root = tmp_path_factory.mktemp("sshd")
    path = make_credentials(root)
    port = free_port()
    (root / "sshd_config").write_text(CONFIG.format(port=port, address="127.0.0.1", root=root,
                                                    pidfile=root / "sshd.pid"))
    with open(root / "sshd.log", "w") as log:
        daemon = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_listening(daemon, port, root / "sshd.log")
        yield SSHServer("127.0.0.1", port, {"PATH": path})
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _wait_until_listening(daemon, port, log, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            pytest.fail("sshd exited with %d: %s" % (daemon.returncode, log.read_text().strip()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("sshd not listening on 127.0.0.1:%d after %d s: %s" % (port, timeout, log.read_text().strip()))

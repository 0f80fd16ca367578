"""A real OpenSSH server's pieces for simulated hosts and tests: its configuration, a host key and an authorised
client key made for the occasion, and an ``ssh`` wrapper that logs in with that key, non-interactively and without
known_hosts (nothing in ~/.ssh is read or written)."""
import os
import shutil
import socket
import subprocess

SSHD = "/usr/sbin/sshd"
CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {root}/host_key
AuthorizedKeysFile {root}/authorized_keys
PidFile {pidfile}
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
PrintMotd no
MaxStartups 100
LogLevel ERROR
"""
WRAPPER = """\
#!/bin/sh
exec {ssh} -F /dev/null -i {root}/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \\
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$@"
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_credentials(root):
    """Generate ``root``/host_key, a client key authorised in ``root``/authorized_keys and the ``ssh`` wrapper that
    logs in with it in ``root``/bin; returns the PATH with that folder first."""
    ssh, keygen = shutil.which("ssh"), shutil.which("ssh-keygen")
    for key in ("host_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(WRAPPER.format(ssh=ssh, root=root))
    (bin_dir / "ssh").chmod(0o755)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    return "%s:%s" % (bin_dir, os.environ["PATH"])

"""Hostfiles for the ssh launcher: read them strictly, and check every host before a job starts."""
import shlex
import shutil
import subprocess
import sys
from multiprocessing.pool import ThreadPool

CONNECT_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 20
SSH_FAILED = 255  # ssh's own exit status when it cannot connect or log in


class HostfileError(Exception):
    """A hostfile that cannot be used; the message is one line naming the file (and line)."""


class UnreachableHosts(HostfileError):
    """Hosts that do not answer ssh at all (rather than answer without what the job needs): ``hosts``, as
    ``read_hostfile`` gives them."""

    def __init__(self, message, hosts):
        super().__init__(message)
        self.hosts = hosts


def read_hostfile(path):
    """``[(line_number, host, port)]`` from ``host`` or ``host:port`` lines; blank lines and ``#`` comments skipped."""
    try:
        with open(path) as lines:
            text = lines.read()
    except OSError as error:
        raise HostfileError("hostfile %s: %s" % (path, error.strerror)) from None
    except UnicodeDecodeError as error:
        raise HostfileError("hostfile %s: not a text file (byte %d is not %s)" % (path, error.start, error.encoding)) \
            from None
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        host, _, port = entry.partition(":")
        port = port or "22"
        valid_port = port.isdigit() and 0 < int(port) < 65536
        if not host or any(char.isspace() for char in host) or not valid_port:
            raise HostfileError("hostfile %s line %d: expected 'host' or 'host:port', got %r" % (path, number, entry))
        hosts.append((number, host, port))
    if not hosts:
        raise HostfileError("hostfile %s lists no hosts" % path)
    return hosts


def write_hostfile(hosts, path):
    """Write ``hosts`` as the plain ``host:port`` lines that dmlc_tracker's ssh launcher reads (no comments)."""
    with open(path, "w") as out:
        out.writelines("%s:%s\n" % (host, port) for _, host, port in hosts)


def check_hosts(hosts, path, workdir=None):
    """Raise HostfileError for the first host that does not answer a non-interactive ssh, lacks this environment's
    Python at the same path, or (when ``workdir`` is given) lacks that directory; UnreachableHosts when every
    failing host fails to answer at all."""
    if shutil.which("ssh") is None:
        raise HostfileError("ssh client not found on PATH (needed by --launcher ssh)")
    with ThreadPool(len(hosts)) as pool:
        probes = pool.map(lambda entry: _probe(entry[1], entry[2], workdir), hosts)
    failed = [(entry, problem, unreachable) for entry, (problem, unreachable) in zip(hosts, probes) if problem]
    if failed:
        (number, host, port), problem, _ = failed[0]
        more = " (%d more lines fail too)" % (len(failed) - 1) if len(failed) > 1 else ""
        message = "hostfile %s line %d (%s:%s): %s%s" % (path, number, host, port, problem, more)
        if all(unreachable for _, _, unreachable in failed):
            raise UnreachableHosts(message, [entry for entry, _, _ in failed])
        raise HostfileError(message)


def _probe(host, port, workdir):
    """(None, False) if ``host`` is usable, else (a short reason, whether ssh got no answer from it at all)."""
    remote = "test -x %s || exit 3" % shlex.quote(sys.executable)
    if workdir:
        remote += "; test -d %s || exit 4" % shlex.quote(workdir)
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % CONNECT_TIMEOUT_S,
               "-o", "StrictHostKeyChecking=no", "-p", port, host, remote]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "no answer from ssh within %d s" % PROBE_TIMEOUT_S, True
    if result.returncode == 3:
        return "%s does not exist there (remote hosts need this environment at the same path)" % sys.executable, False
    if result.returncode == 4:
        return ("directory %s does not exist there (use the same path on every host, or --sync-dst-dir)" % workdir,
                False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return ("ssh failed: %s" % (lines[-1].strip() if lines else "exit code %d" % result.returncode),
                result.returncode == SSH_FAILED)
    return None, False

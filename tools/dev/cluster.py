"""A simulated cluster on one machine: hosts as Linux network namespaces on a bridge, each with its own sshd.

    with Cluster(4) as cluster:
        cluster.run(["python", "tools/launch.py", "-n", "4", "-H", cluster.hostfile, ...])

Every instance claims its own number K (a folder ``/run/sim-cluster/K``, made atomically) and with it the address
block 198.18.0.0/15 + K * 256 (/24), the bridge ``scKbr`` and the namespaces ``scK-head``, ``scK-h1`` ... ``scK-hN``,
so that harnesses running at the same time never collide. The head host (address .1) is where the launcher runs:
the scheduler binds its address, which dmlc_tracker's automatic detection finds because the head's only route is
its link to the bridge. Hosts 1..N (addresses .2 ...) each run a real ``sshd`` on port 22 with a host key made for
the instance and one authorised client key; ``env`` puts an ``ssh`` wrapper that uses that key (and no known_hosts)
first on PATH. The root namespace has no address on the bridge: traffic stays among the instance's addresses.

Every host shares this machine's file system, as a cluster shares NFS, except ``local``: a folder that each host
sees as its own (a bind mount in the host's mount namespace; empty from outside), e.g. for ``--sync-dst-dir``.
``down`` (also on exit, via atexit) kills every process in the namespaces and removes namespaces, links and folders.
"""
import atexit
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

from tools.dev.sshd import CONFIG, SSHD, make_credentials

STATE = pathlib.Path("/run/sim-cluster")
BLOCK = ipaddress.ip_network("198.18.0.0/15")
INSTANCES = BLOCK.num_addresses // 256
MAX_HOSTS = 250
READY_TIMEOUT_S = 30
# sshd's keepalive: a session whose client stops answering (its link gone) ends, and with it the job's processes
# (tools/launch.py's remote guard); what a cluster's hosts should have too
CLIENT_ALIVE = "ClientAliveInterval 2\nClientAliveCountMax 3\n"


class ClusterError(Exception):
    """The simulated cluster cannot be set up (not root, no ``ip``, no namespaces)."""


def ip(*args, check=True):
    done = subprocess.run(["ip", *map(str, args)], capture_output=True, text=True)
    if check and done.returncode:
        raise ClusterError("ip %s: %s" % (" ".join(map(str, args)), done.stderr.strip()))
    return done.stdout


class Cluster:
    """N hosts, each a network namespace with an address, an sshd and a folder of its own."""

    def __init__(self, hosts, rate=None):
        if not 1 <= hosts <= MAX_HOSTS:
            raise ClusterError("a simulated cluster has 1 to %d hosts, got %d" % (MAX_HOSTS, hosts))
        self.size, self.rate = hosts, rate
        self.number = self.root = None

    # set-up and clean-up

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *_):
        self.down()

    def up(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise ClusterError("network namespaces need root and iproute2's ip")
        self._claim()
        atexit.register(self.down)
        try:
            (self.root / "cluster.json").write_text(json.dumps({"hosts": self.size, "owner": os.getpid()}))
            self.path = make_credentials(self.root)
            self.local.mkdir()
            ip("link", "add", self.bridge, "type", "bridge")
            ip("link", "set", self.bridge, "up")
            for index in range(self.size + 1):
                self._add_host(index)
            self.hostfile.write_text("".join(address + "\n" for address in self.addresses))
            for index in range(1, self.size + 1):
                self.start_sshd(index)
            self._wait_ready()
        except BaseException:
            self.down()
            raise
        return self

    def _claim(self):
        STATE.mkdir(parents=True, exist_ok=True)
        for number in range(INSTANCES):
            try:
                (STATE / str(number)).mkdir()
            except FileExistsError:
                continue
            self.number, self.root = number, STATE / str(number)
            return
        raise ClusterError("all %d simulated-cluster slots under %s are taken" % (INSTANCES, STATE))

    def _add_host(self, index):
        namespace, outside = self.namespace(index), "sc%dv%d" % (self.number, index)
        ip("netns", "add", namespace)
        ip("link", "add", outside, "type", "veth", "peer", "name", "sc%dp%d" % (self.number, index))
        ip("link", "set", "sc%dp%d" % (self.number, index), "netns", namespace)
        ip("-n", namespace, "link", "set", "sc%dp%d" % (self.number, index), "name", "eth0")
        ip("link", "set", outside, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", "%s/24" % self.address(index), "dev", "eth0")
        for device in ("lo", "eth0"):
            ip("-n", namespace, "link", "set", device, "up")
        ip("-n", namespace, "route", "add", "default", "dev", "eth0")
        if self.rate:
            for args in (("-n", namespace, "eth0"), ("", "", outside)):  # both directions of the link
                prefix = [word for word in args[:2] if word]
                subprocess.run(["tc", *prefix, "qdisc", "add", "dev", args[2], "root", "handle", "1:", "htb",
                                "default", "10"], check=True)
                subprocess.run(["tc", *prefix, "class", "add", "dev", args[2], "parent", "1:", "classid", "1:10",
                                "htb", "rate", self.rate], check=True)
        (self.root / ("h%d" % index) / "local").mkdir(parents=True)

    def start_sshd(self, index):
        """Start host ``index``'s sshd (in its namespace, with its own view of ``local``)."""
        folder = self.root / ("h%d" % index)
        config = folder / "sshd_config"
        config.write_text(CONFIG.format(port=22, address=self.address(index), root=self.root,
                                        pidfile=folder / "sshd.pid") + CLIENT_ALIVE)
        script = "mount --bind %s %s && exec %s -f %s -E %s" % (folder / "local", self.local, SSHD, config,
                                                                folder / "sshd.log")
        subprocess.run(["ip", "netns", "exec", self.namespace(index), "sh", "-c", script], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True)

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = set(range(1, self.size + 1))
        while pending:
            probes = {index: self.popen(["ssh", "-o", "ConnectTimeout=5", self.address(index), "true"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for index in pending}
            pending = {index for index, probe in probes.items() if probe.wait() != 0}
            if pending and time.monotonic() > deadline:
                raise ClusterError("sshd of host(s) %s not answering after %d s"
                                   % (", ".join(self.address(i) for i in sorted(pending)), READY_TIMEOUT_S))
            if pending:
                time.sleep(0.2)

    def down(self):
        """Kill every process in the namespaces, remove them, the links and the folders (idempotent)."""
        if self.root is None:
            return
        for index in range(self.size + 1):
            namespace = self.namespace(index)
            for _ in range(50):  # what is killed may have forked meanwhile
                pids = self.pids(index)
                if not pids:
                    break
                for pid in pids:
                    _signal(pid, signal.SIGCONT)  # a frozen process is killed too, but its parent must reap it
                    _signal(pid, signal.SIGKILL)
                time.sleep(0.1)
            ip("netns", "del", namespace, check=False)
            ip("link", "del", "sc%dv%d" % (self.number, index), check=False)
        ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        atexit.unregister(self.down)

    # names and addresses

    @property
    def bridge(self):
        return "sc%dbr" % self.number

    def namespace(self, index):
        """Host ``index``'s namespace: 0 is the head, 1..N the hosts of the hostfile."""
        return "sc%d-%s" % (self.number, "head" if index == 0 else "h%d" % index)

    def address(self, index):
        return str(BLOCK.network_address + 256 * self.number + 1 + index)

    @property
    def addresses(self):
        """The addresses of hosts 1..N, as in the hostfile."""
        return [self.address(index) for index in range(1, self.size + 1)]

    @property
    def head(self):
        return self.address(0)

    @property
    def hostfile(self):
        return self.root / "hosts"

    @property
    def local(self):
        """The path every host sees as its own folder (empty outside the hosts)."""
        return self.root / "local"

    def local_of(self, index):
        """Where host ``index``'s ``local`` folder is seen from outside."""
        return self.root / ("h%d" % index) / "local"

    def index_of(self, address):
        return int(ipaddress.ip_address(address)) - int(BLOCK.network_address + 256 * self.number) - 1

    @property
    def env(self):
        """Environment additions for commands on the cluster: PATH with the ssh wrapper first."""
        return {"PATH": self.path}

    # running things and breaking them

    def popen(self, command, host=0, env=None, **options):
        """Start ``command`` on host ``host`` (default: the head) with ``env`` and the ssh wrapper first on PATH."""
        environment = {**os.environ, **self.env, **(env or {})}
        return subprocess.Popen(["ip", "netns", "exec", self.namespace(host)] + [str(word) for word in command],
                                env=environment, **options)

    def run(self, command, host=0, env=None, timeout=None, **options):
        """Run ``command`` on host ``host`` to the end; returns subprocess.run's CompletedProcess."""
        process = self.popen(command, host, env, **options)
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def pids(self, index):
        return [int(pid) for pid in ip("netns", "pids", self.namespace(index), check=False).split()]

    def sshd_pid(self, index):
        try:
            return int((self.root / ("h%d" % index) / "sshd.pid").read_text())
        except (OSError, ValueError):
            return None

    def leftovers(self):
        """``{address: [command line]}`` of the processes in the namespaces other than the sshd listeners."""
        found = {}
        for index in range(self.size + 1):
            for pid in set(self.pids(index)) - {self.sshd_pid(index)}:
                try:
                    line = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                found.setdefault(self.address(index), []).append("%d %s" % (pid, line.strip()))
        return found

    def kill_leftovers(self):
        """SIGKILL what ``leftovers`` lists (the job processes of a test that failed half-way)."""
        for index in range(self.size + 1):
            for pid in set(self.pids(index)) - {self.sshd_pid(index)}:
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGKILL)

    def counters(self, index):
        """(bytes received, bytes sent) on host ``index``'s interface, from the kernel's counters."""
        stats = json.loads(ip("-n", self.namespace(index), "-j", "-s", "link", "show", "dev", "eth0"))[0]["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]

    def stop_sshd(self, index):
        pid = self.sshd_pid(index)
        if pid:
            _signal(pid, signal.SIGTERM)

    def freeze(self, index, frozen=True):
        """SIGSTOP (or SIGCONT) every process on host ``index``."""
        for pid in self.pids(index):
            _signal(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def set_link(self, index, up):
        """Plug host ``index``'s link into the bridge, or pull it."""
        ip("link", "set", "sc%dv%d" % (self.number, index), "up" if up else "down")


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def remove(number):
    """Take down the instance with number ``number`` left by ``up`` in another process."""
    cluster = Cluster(json.loads((STATE / str(number) / "cluster.json").read_text())["hosts"])
    cluster.number, cluster.root = number, STATE / str(number)
    cluster.down()


def instances():
    """``{number: description}`` of the instances set up on this machine."""
    found = {}
    for folder in sorted(STATE.glob("[0-9]*"), key=lambda path: int(path.name)):
        try:
            found[int(folder.name)] = json.loads((folder / "cluster.json").read_text())
        except (OSError, ValueError):
            found[int(folder.name)] = {}
    return found

"""Launch a distributed MXNet job: MXNet's own launcher, repaired for Python >= 3.9, checked and supervised.

    python tools/launch.py [--host-ip ADDR] [MXNet launch.py options] COMMAND...     (or: python -m tools.launch)

A thin shim over the launcher that ships in the mxnet wheel (``mxnet/tools/launch.py`` and the ``dmlc_tracker``
package), which does the real work; its options are MXNet's (-n, -s, -H, --launcher local|ssh, --sync-dst-dir).
On top of them the shim
* repairs the tracker on Python >= 3.9 (``Thread.isAlive`` was removed), in memory: site-packages stays untouched;
* takes ``--host-ip ADDR``, the address the scheduler binds and every process connects to (by default dmlc_tracker
  picks a non-loopback address by itself); under the local launcher servers and workers use it as well, so
  ``--host-ip 127.0.0.1`` keeps a local job on loopback;
* gives every process of the job ``MXNET_KVSTORE_BIGARRAY_BOUND`` (this environment's, else ``BIGARRAY_BOUND``,
  in place of MXNet's 10^6): arrays larger than that are split over all servers, smaller ones go whole to one;
  MXNet's bound leaves one of 10 servers of DPN-92 with about 1.17 x the mean traffic (docs/scaling.md);
* runs COMMAND with this environment's absolute Python (a leading ``python``/``python3`` becomes
  ``sys.executable``: the ssh launcher does not forward PATH), passes every argument literally, and starts it
  through ``dpn_mxnet/launcher/remote_guard.py`` so that it dies with its launcher or its ssh connection;
* holds the scheduler's port from its choice to the end of the job (a lock file per port, see ``hold_port``), so
  that jobs started at the same time on one machine never pick the same port;
* checks every hostfile line (``host`` or ``host:port``; blank lines and ``#`` comments are skipped) with a
  non-interactive ssh before anything starts;
* supervises every process of the job (``dpn_mxnet.launcher.supervisor``): the first non-zero exit prints one line
  naming the role, host and kvstore rank, stops every other process, and the launcher exits 1 (0 when all exit 0);
* ends a job in which no worker made progress for ``--stall-timeout`` seconds (a frozen process, a cut link),
  naming who stopped it in one line (``dpn_mxnet.launcher.watchdog``; docs/failures.md);
* with ``--max-restarts N``, relaunches a job that stopped on a failure up to N times, each time with
  ``--resume auto`` on COMMAND (replacing any --resume given), and prints one line per restart; a failure that a
  restart would meet again (a process exiting with a usage error, status 2, or an input or configuration error,
  status 3) is not restarted, and the last line says why, or that the restarts are used up.
* with ``--min-nodes M`` as well, a relaunch leaves out the hosts that do not answer ssh as long as M remain: the
  workers and servers shrink in proportion to the hosts, and COMMAND gets ``--allow-recipe-change`` (the world
  size is part of the training recipe).
"""
import argparse
import fcntl
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import types
from multiprocessing.pool import ThreadPool

from dmlc_tracker import local as dmlc_local
from dmlc_tracker import ssh as dmlc_ssh
from dmlc_tracker import tracker as dmlc_tracker

from dpn_mxnet.launcher import remote_guard
from dpn_mxnet.launcher.hostfile import HostfileError, UnreachableHosts, check_hosts, read_hostfile, write_hostfile
from dpn_mxnet.launcher.supervisor import Supervisor
from dpn_mxnet import cli

PROGRAM = "launch.py"
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
_PYTHONS = {"python", "python3", "python%d.%d" % sys.version_info[:2]}
_PLAIN_WORD = re.compile(r"[\w@%+=:,./-]+\Z", re.ASCII)
STALL_TIMEOUT_S = 600  # docs/failures.md, "Stalls": why this is never reached in a healthy DPN-92 run
MIN_STALL_TIMEOUT_S = 5  # the guards report every second
SCHEDULER_PORTS = range(9091, 9999)  # where dmlc_tracker looks for the scheduler's port
PORT_LOCKS = "/tmp/dmlc-scheduler-ports"  # shared by every launcher on this machine, whoever runs it
BIGARRAY_BOUND = "100000"  # elements; the ssh launcher does not pass the environment on, so it goes on COMMAND


class LaunchError(Exception):
    """Input the launcher cannot use; reported as one line."""


def build_parser():
    """The shim's own options; everything else goes to MXNet's launch.py (whose help follows ours)."""
    parser = cli.ArgumentParser(
        prog=PROGRAM, add_help=False,
        usage="%(prog)s [--host-ip ADDR] [MXNet launch.py options, below] COMMAND...",
        description="Launch a distributed MXNet job with MXNet's launcher, repaired and supervised: the first "
                    "process that exits non-zero stops the whole job. Remote hosts need this environment and "
                    "the working directory at the same paths (or --sync-dst-dir) and passwordless ssh.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host-ip", default="auto", metavar="ADDR",
                        help="address the scheduler binds and every process connects to; 'auto' lets "
                             "dmlc_tracker pick a non-loopback address; the local launcher makes servers and "
                             "workers use it too")
    parser.add_argument("--max-restarts", type=int, default=0, metavar="N",
                        help="relaunch a job that failed up to N times, with --resume auto on COMMAND")
    parser.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S, metavar="S",
                        help="stop the job when no worker made progress for S seconds, or a process of it has "
                             "been stopped or silent that long (0: never)")
    parser.add_argument("--min-nodes", type=int, metavar="M",
                        help="with --max-restarts: a relaunch leaves out hosts that do not answer ssh while at "
                             "least M remain (workers and servers shrink in proportion; COMMAND gets "
                             "--allow-recipe-change)")
    return parser


def resuming(launch_argv):
    """``launch_argv`` with ``--resume auto`` on the command: appended, or in place of a --resume given."""
    if "--resume" in launch_argv[:-1]:
        at = launch_argv.index("--resume")
        return launch_argv[:at + 1] + ["auto"] + launch_argv[at + 2:]
    return [word for word in launch_argv if not word.startswith("--resume=")] + ["--resume", "auto"]


def job_command(command, launcher):
    """The words dmlc_tracker joins into the shell command line of every process of the job.

    Leading NAME=VALUE words stay in front, with MXNET_KVSTORE_BIGARRAY_BOUND added unless given; a leading python, python3 or python3.X (this version) becomes this
    environment's absolute Python; the program runs under remote_guard; every word is quoted so that the shell
    passes it on literally. Quotes are double quotes because the ssh launcher wraps the whole line in single
    quotes, which it therefore cannot contain.
    """
    split = next((i for i, word in enumerate(command) if not _ASSIGNMENT.match(word)), len(command))
    assignments, program = command[:split], command[split:]
    if not any(word.startswith("MXNET_KVSTORE_BIGARRAY_BOUND=") for word in assignments):
        assignments = assignments + ["MXNET_KVSTORE_BIGARRAY_BOUND=" + os.environ.get("MXNET_KVSTORE_BIGARRAY_BOUND",
                                                                                      BIGARRAY_BOUND)]
    if not program:
        raise LaunchError("no command to launch")
    if program[0] in _PYTHONS:
        program = [sys.executable] + program[1:]
    if launcher == "ssh" and any("'" in word for word in program):
        raise LaunchError("the ssh launcher cannot pass arguments that contain a single quote (')")
    guard = [sys.executable, os.path.abspath(remote_guard.__file__)]
    return assignments + [_shell_word(word) for word in guard + program]


def _shell_word(word):
    if _PLAIN_WORD.match(word):
        return word
    return '"%s"' % re.sub(r'([\\"$`])', r"\\\1", word)


def resolve_host_ip(address):
    """The IP address for ``--host-ip`` after checking that this machine can bind it ('auto' passes through)."""
    if address == "auto":
        return address
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((sockaddr[0], 0))
    except OSError as error:
        raise LaunchError("--host-ip %s: not an address of this machine (%s)"
                          % (address, error.strerror or error)) from None
    return sockaddr[0]


def hold_port(host_ip, folder=PORT_LOCKS):
    """The scheduler's port, held for the life of this process.

    dmlc_tracker takes the first port it can bind and closes it again; the scheduler binds it seconds later, so two
    jobs started together would take the same one. Here a port is taken only with an exclusive lock on
    ``folder/PORT.lock`` (``flock``, released by the kernel when this launcher exits, however it ends) and when it
    can be bound; the lock file descriptor stays open on purpose. The search runs down from the top of
    dmlc_tracker's range, away from launchers without these locks (MXNet's own), which search up from its bottom."""
    os.makedirs(folder, exist_ok=True)
    try:
        os.chmod(folder, 0o1777)  # every user's launchers share the locks
    except PermissionError:
        pass
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    for port in reversed(SCHEDULER_PORTS):
        lock = os.open(os.path.join(folder, "%d.lock" % port), os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind(("", port))
            return port
        except OSError:  # locked by another launcher, or in use
            os.close(lock)
    raise LaunchError("no free scheduler port in %d-%d" % (SCHEDULER_PORTS[0], SCHEDULER_PORTS[-1]))


def _load_mxnet_launcher():
    """``mxnet/tools/launch.py`` from the installed wheel, loaded by path: importing the mxnet package would load
    libmxnet into a process that only starts other processes."""
    spec = importlib.util.find_spec("mxnet")
    path = spec and os.path.join(spec.submodule_search_locations[0], "tools", "launch.py")
    if not path or not os.path.isfile(path):
        raise LaunchError("MXNet's launcher (mxnet/tools/launch.py) is not installed for %s" % sys.executable)
    module_spec = importlib.util.spec_from_file_location("mxnet_tools_launch", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    module.argparse = types.SimpleNamespace(**dict(vars(argparse), ArgumentParser=cli.ArgumentParser))  # no abbrevs
    return module


def _prepare(mxnet_options, dmlc_options, host_ip, scratch, min_nodes=None, left_out=None):
    """Check the options MXNet's launcher parsed and adapt the dmlc options before it dispatches the job.

    On a relaunch under --min-nodes, ``min_nodes`` is given and ``left_out`` lists the (host, port) left out so far;
    hosts that do not answer now are added to it."""
    launcher, hostfile = dmlc_options.cluster, dmlc_options.host_file
    hostfile = None if hostfile in (None, "None") else hostfile
    if launcher not in ("local", "ssh"):
        raise LaunchError("--launcher %s: only the local and ssh launchers are supported" % launcher)
    if launcher == "ssh" and hostfile is None:
        raise LaunchError("--launcher ssh needs -H HOSTFILE (lines 'host' or 'host:port')")
    if launcher == "local" and hostfile is not None:
        raise LaunchError("-H %s: the local launcher runs every process on this machine; "
                          "use --launcher ssh for a hostfile" % hostfile)
    if dmlc_options.num_workers < 1 or dmlc_options.num_servers < 1:
        raise LaunchError("-n and -s must be at least 1 (MXNet's dist kvstore needs a server)")
    unsupported = [flag for flag, used in (("--env-server", mxnet_options.env_server),
                                           ("--env-worker", mxnet_options.env_worker),
                                           ("--env", mxnet_options.env and launcher == "ssh")) if used]
    if unsupported:
        raise LaunchError("%s: not passed on by dmlc_tracker's %s launcher" % (unsupported[0], launcher))
    if launcher == "ssh":
        hosts = read_hostfile(hostfile)
        synced = dmlc_options.sync_dst_dir not in (None, "None")
        if min_nodes is not None:
            hosts = _leave_out(hosts, dmlc_options, hostfile, synced, min_nodes, left_out)
        else:
            check_hosts(hosts, hostfile, workdir=None if synced else os.getcwd())
        dmlc_options.host_file = os.path.join(scratch, "hosts")
        write_hostfile(hosts, dmlc_options.host_file)
    elif host_ip != "auto":
        os.environ["DMLC_NODE_HOST"] = host_ip
    dmlc_options.command = job_command(dmlc_options.command, launcher)
    return dmlc_options


def _leave_out(hosts, dmlc_options, hostfile, synced, min_nodes, left_out):
    """The hosts of a relaunch under --min-nodes: those that answer ssh, with workers and servers (in
    ``dmlc_options``) in proportion to the hostfile's; raises UnreachableHosts if fewer than --min-nodes remain."""
    listed = len(hosts)
    hosts = [entry for entry in hosts if entry[1:] not in left_out]
    try:
        check_hosts(hosts, hostfile, workdir=None if synced else os.getcwd())
    except UnreachableHosts as error:
        if len(hosts) - len(error.hosts) < min_nodes:
            raise UnreachableHosts("%s; fewer than --min-nodes %d hosts would remain" % (error, min_nodes),
                                   error.hosts) from None
        left_out.extend(entry[1:] for entry in error.hosts)
        hosts = [entry for entry in hosts if entry not in error.hosts]
        print("%s: leaving out %s (%s)" % (PROGRAM, ", ".join("%s:%s" % entry[1:] for entry in error.hosts), error),
              file=sys.stderr, flush=True)
    if len(hosts) < listed:
        dmlc_options.num_workers = max(1, dmlc_options.num_workers * len(hosts) // listed)
        dmlc_options.num_servers = max(1, dmlc_options.num_servers * len(hosts) // listed)
        dmlc_options.command = dmlc_options.command + ["--allow-recipe-change"]
        print("%s: relaunching on %d of %d hosts: %d workers, %d servers" % (
            PROGRAM, len(hosts), listed, dmlc_options.num_workers, dmlc_options.num_servers), file=sys.stderr,
            flush=True)
    return hosts


def _repair_and_supervise(mxnet_launch, supervisor, host_ip, scratch, min_nodes=None, left_out=None):
    """Patch the loaded launcher and dmlc_tracker in memory."""
    if not hasattr(threading.Thread, "isAlive"):
        threading.Thread.isAlive = threading.Thread.is_alive  # removed in Python 3.9; tracker.py still calls it
    for module in (dmlc_local, dmlc_ssh, dmlc_tracker):
        module.subprocess = supervisor
    dmlc_ssh.Pool = ThreadPool  # rsync (--sync-dst-dir) in threads, so that its failures reach the supervisor
    if host_ip != "auto":
        dmlc_tracker.get_host_ip = lambda _requested=None: host_ip
    port = hold_port(host_ip)
    dmlc_tracker.PSTracker.__init__.__defaults__ = (port, port + 1, None)  # port, port_end, envs: that port only
    to_dmlc = mxnet_launch.dmlc_opts
    mxnet_launch.dmlc_opts = lambda options: _prepare(options, to_dmlc(options), host_ip, scratch, min_nodes, left_out)


def _run(mxnet_launch, launch_argv, supervisor):
    """Run MXNet's launcher in a thread (the main thread stays free for signals); returns the exit status."""
    outcome = {}

    def launch():
        try:
            mxnet_launch.main()
            outcome["status"] = 0
        except SystemExit as end:  # argparse: --help, or a usage error already printed
            outcome["status"] = end.code
        except BaseException as error:  # re-raised in the main thread
            outcome["error"] = error

    sys.argv = [PROGRAM] + launch_argv
    thread = threading.Thread(target=launch, daemon=True)
    thread.start()
    while thread.is_alive() and not supervisor.stopping:
        thread.join(0.2)
    if supervisor.stopping:
        return supervisor.wait_stopped()
    if "error" in outcome:
        raise outcome["error"]
    if outcome["status"]:
        return outcome["status"] if isinstance(outcome["status"], int) else 1
    return supervisor.finish()


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(signum)


def main(argv=None):
    parser = build_parser()
    options, launch_argv = parser.parse_known_args(argv)
    if {"-h", "--help"} & set(launch_argv):
        parser.print_help()
        print()
    if options.max_restarts < 0:
        print("%s: error: --max-restarts must be 0 or more, got %d" % (PROGRAM, options.max_restarts), file=sys.stderr)
        return 2
    if options.stall_timeout and not options.stall_timeout >= MIN_STALL_TIMEOUT_S:
        print("%s: error: --stall-timeout must be 0 or at least %d s, got %g" % (PROGRAM, MIN_STALL_TIMEOUT_S,
                                                                             options.stall_timeout), file=sys.stderr)
        return 2
    if options.min_nodes is not None and options.min_nodes < 1:
        print("%s: error: --min-nodes must be 1 or more, got %d" % (PROGRAM, options.min_nodes), file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    signal.signal(signal.SIGTERM, _interrupt)
    left_out = []  # hosts left out of relaunches under --min-nodes
    status, cause, recurring = launch_once(options, launch_argv)
    for restart in range(1, options.max_restarts + 1):
        if status != 1 or recurring:  # 0: done; 2: bad input; 128 + N: interrupted by signal N
            break
        print("%s: restart %d of %d: relaunching the job with --resume auto" % (PROGRAM, restart,
                                                                             options.max_restarts),
              file=sys.stderr, flush=True)
        launch_argv = resuming(launch_argv)
        status, cause, recurring = launch_once(options, launch_argv, relaunch=True, left_out=left_out)
    if status == 1 and recurring and options.max_restarts:
        print("%s: not restarted: the failure above is %s, which a restart would meet again" % (PROGRAM, recurring),
              file=sys.stderr, flush=True)
    elif status == 1 and options.max_restarts:
        print("%s: restarts used up (%d of %d); the last failure: %s" % (
            PROGRAM, options.max_restarts, options.max_restarts, cause), file=sys.stderr, flush=True)
    return status


def launch_once(options, launch_argv, relaunch=False, left_out=None):
    """Run the job once under a new supervisor; returns the launcher's exit status, the failure's one-line cause
    and, for a failure that a restart would meet again, what it is (else None).

    On a relaunch a host that does not answer ssh is a failure (exit status 1), or is left out under --min-nodes."""
    supervisor = Supervisor(PROGRAM, options.stall_timeout)
    status, cause = _launch_once(options, launch_argv, supervisor, relaunch, left_out)
    return status, cause, supervisor.recurring


def _launch_once(options, launch_argv, supervisor, relaunch, left_out):
    with tempfile.TemporaryDirectory(prefix="launch-") as scratch:
        try:
            mxnet_launch = _load_mxnet_launcher()
            host_ip = resolve_host_ip(options.host_ip)
            _repair_and_supervise(mxnet_launch, supervisor, host_ip, scratch,
                                  options.min_nodes if relaunch else None, left_out)
            return _run(mxnet_launch, launch_argv, supervisor), supervisor.failure
        except UnreachableHosts as error:
            if not relaunch:
                print("%s: error: %s" % (PROGRAM, error), file=sys.stderr)
                return 2, str(error)
            print("%s: relaunch failed: %s" % (PROGRAM, error), file=sys.stderr, flush=True)
            return 1, str(error)
        except (LaunchError, HostfileError) as error:
            print("%s: error: %s" % (PROGRAM, error), file=sys.stderr)
            return 2, str(error)
        except KeyboardInterrupt as interrupt:
            signum = interrupt.args[0] if interrupt.args else signal.SIGINT
            supervisor.stop("interrupted by %s" % signal.Signals(signum).name)
            return 128 + signum, supervisor.failure
        finally:
            supervisor.stop()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now, without joining threads: after a failure the supervisor parks dmlc_tracker's threads for good.
    os._exit(status)

"""A simulated cluster on this machine (root): N hosts as network namespaces on a bridge, each with its own address
(from 198.18.0.0/15) and a real sshd, and a head host where commands run (see tools/dev/cluster.py).

    python tools/dev/sim_cluster.py run -n 10 -- make train NODES=10 HOSTS='$CLUSTER_HOSTS' ...   # up, run, down
    python tools/dev/sim_cluster.py up -n 4 [--rate 1gbit]     # leave it up; prints how to run commands on it
    python tools/dev/sim_cluster.py list
    python tools/dev/sim_cluster.py down NUMBER|--all

``run`` executes COMMAND on the head host with the ssh wrapper first on PATH and CLUSTER_HOSTS (the hostfile) and
CLUSTER_LOCAL (a folder each host sees as its own) in the environment, words expanded by ``sh -c``; the cluster is
taken down when COMMAND ends, fails or is interrupted. Its exit status is COMMAND's.
"""
import os
import shlex
import signal
import subprocess
import sys

from dpn_mxnet import cli
from tools.dev import cluster as simulated


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    for name in ("up", "run"):
        command = commands.add_parser(name, help="set a cluster up" + (", run COMMAND, take it down" if name == "run"
                                                                       else " and leave it up"))
        command.add_argument("-n", "--hosts", type=int, required=True, help="number of hosts")
        command.add_argument("--rate", help="htb rate of every host's link, each way (e.g. 10gbit; default: none)")
        if name == "run":
            command.add_argument("command", nargs="+", help="the command to run on the head host")
    commands.add_parser("list", help="the clusters set up on this machine")
    down = commands.add_parser("down", help="take a cluster down")
    down.add_argument("number", nargs="?", type=int, help="its number (see list)")
    down.add_argument("--all", action="store_true", help="every cluster on this machine")
    return parser.parse_args(argv)


def environment(cluster):
    return dict(cluster.env, CLUSTER_HOSTS=str(cluster.hostfile), CLUSTER_LOCAL=str(cluster.local))


def run(args):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # clean up on the way out
    with simulated.Cluster(args.hosts, args.rate) as cluster:
        print("sim_cluster: %d hosts %s, head %s" % (args.hosts, " ".join(cluster.addresses), cluster.head),
              file=sys.stderr, flush=True)
        command = " ".join(args.command) if len(args.command) > 1 else args.command[0]
        process = cluster.popen(["sh", "-c", command], env=environment(cluster))
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            raise


def up(args):
    cluster = simulated.Cluster(args.hosts, args.rate).up()
    exports = " ".join("%s=%s" % (name, shlex.quote(value)) for name, value in environment(cluster).items())
    print("cluster %d: hosts %s (hostfile %s), head %s\nrun a command on the head host:\n"
          "  ip netns exec %s env %s COMMAND\ntake it down: python tools/dev/sim_cluster.py down %d"
          % (cluster.number, " ".join(cluster.addresses), cluster.hostfile, cluster.head, cluster.namespace(0),
             exports, cluster.number))
    cluster.root = None  # left up on purpose: no clean-up at exit
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.action == "run":
            return run(args)
        if args.action == "up":
            return up(args)
        found = simulated.instances()
        if args.action == "list":
            for number, description in found.items():
                print("%d: %s hosts, set up by pid %s" % (number, description.get("hosts", "?"),
                                                          description.get("owner", "?")))
            return 0
        numbers = list(found) if args.all else [args.number]
        if numbers == [None] or any(number not in found for number in numbers):
            print("sim_cluster.py: error: down needs the number of a cluster (see list) or --all", file=sys.stderr)
            return 2
        for number in numbers:
            simulated.remove(number)
        return 0
    except simulated.ClusterError as error:
        print("sim_cluster.py: error: %s" % error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

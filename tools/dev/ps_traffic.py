"""What the parameter servers of a dist_sync job send and receive per step, from the interface counters of simulated
hosts (tools/dev/cluster.py: network namespaces; needs root): one host per server and one per worker, the scheduler on
the head host, `train/train_imagenet.py --benchmark` on synthetic data.

    python tools/dev/ps_traffic.py --servers 4 --workers 2            # DPN-92 at 32x32, batch 1 per worker
    python tools/dev/ps_traffic.py --servers 10 --workers 2 --bound 1000000      # MXNet's own bound
    python tools/dev/ps_traffic.py --servers 2 --workers 2 --driver kvstore --compression 0.5

The job is train_imagenet.py's benchmark (the optimizer on the workers: gradients pushed, summed gradients pulled),
or with ``--driver kvstore`` this script itself pushing and pulling arrays of the network's shapes in the Module's
order with the optimizer on the servers (gradients pushed, weights pulled), which allows MXNet's 2-bit gradient
compression (``--compression THRESHOLD``; MXNet does not compress the push-pull of the first kind).
The job runs twice on the same hosts, with --steps A and B benchmark steps; the difference of the two runs' bytes,
divided by B - A, is the traffic of one step without the start-up (connecting, initial weights). Prints one JSON line:
bytes per step per worker and per server (received + sent, as the interfaces count them: payload, ps-lite's
messages, TCP/IP and Ethernet headers), the dist_sync minimum per worker (2 x 4 bytes x parameters: every gradient
pushed once, every weight pulled once), the server balance (max / mean) measured, and the balance predicted by
MXNet's placement rule (an array of up to MXNET_KVSTORE_BIGARRAY_BOUND elements on server key x 9973 mod servers,
a larger one split evenly over all).
"""
import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import time

import symbols
from dpn_mxnet import cli, identify
from tools.dev import cluster as simulated

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARK_WARMUP = 2  # untimed steps of train_imagenet.py --benchmark before the timed ones


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--servers", type=int, default=2, help="parameter servers, one host each")
    parser.add_argument("--workers", type=int, default=2, help="workers, one host each")
    parser.add_argument("--network", default="dpn92", help="a DPN name or a JSON config")
    parser.add_argument("--size", type=int, default=32, help="image size (traffic does not depend on it)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch per worker (nor on this)")
    parser.add_argument("--steps", type=int, nargs=2, default=(2, 6), metavar=("A", "B"),
                        help="benchmark steps of the two runs")
    parser.add_argument("--bound", type=int, default=100000,
                        help="MXNET_KVSTORE_BIGARRAY_BOUND for the job (tools/launch.py's default; MXNet's is 10^6)")
    parser.add_argument("--train-args", default="", help="more train_imagenet.py options")
    parser.add_argument("--driver", choices=("benchmark", "kvstore"), default="benchmark",
                        help="what the workers run (see above)")
    parser.add_argument("--compression", type=float, metavar="THRESHOLD",
                        help="--driver kvstore: 2-bit gradient compression with this threshold")
    parser.add_argument("--kv-worker", type=int, metavar="STEPS", help=argparse.SUPPRESS)  # a process of the job
    parser.add_argument("--timeout", type=int, default=1200, help="seconds allowed for each run")
    return parser.parse_args(argv)


def parameter_sizes(network, size):
    """Element counts of the network's learned arrays, in the order the Module gives them to the kvstore."""
    shapes, _ = identify.parameter_shapes(symbols.get_symbol(network, 1000, image_size=size),
                                          (1, 3, size, size))
    return [int(_product(shape)) for shape in shapes.values()]


def _product(shape):
    count = 1
    for extent in shape:
        count *= extent
    return count


def predicted_balance(sizes, servers, bound):
    """Max / mean of the elements each server holds under MXNet's placement (key = position in the Module)."""
    held = [0.0] * servers
    for key, count in enumerate(sizes):
        if count <= bound:
            held[key * 9973 % servers] += count
        else:
            for server in range(servers):
                held[server] += count / servers
    return max(held) / (sum(held) / servers)


def run_job(cluster, args, steps):
    """Run the benchmark job once; returns {host index: bytes received + sent} during it."""
    assignments = ["MXNET_KVSTORE_BIGARRAY_BOUND=%d" % args.bound]
    if args.driver == "kvstore":
        job = ["python", str(REPO / "tools" / "dev" / "ps_traffic.py"), "--kv-worker", steps, "--network", args.network,
               "--size", args.size] + (["--compression", args.compression] if args.compression else [])
    else:
        job = ["python", str(REPO / "train" / "train_imagenet.py"), "--network", args.network, "--benchmark",
               "--benchmark-batches", steps, "--size", args.size, "--batch-size", args.batch_size,
               "--kv-store", "dist_sync"] + shlex.split(args.train_args)
    command = ["python", str(REPO / "tools" / "launch.py"), "-n", args.workers, "-s", args.servers,
               "--launcher", "ssh", "-H", cluster.hostfile] + assignments + job
    before = {index: sum(cluster.counters(index)) for index in range(1, cluster.size + 1)}
    done = cluster.run([sys.executable] + command[1:], env={"OMP_NUM_THREADS": "1"}, cwd=REPO, timeout=args.timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        sys.exit("ps_traffic.py: the job failed (exit status %d):\n%s" % (done.returncode, done.stdout[-3000:]))
    check_placement(cluster, args, done.stdout)
    return {index: sum(cluster.counters(index)) - before[index] for index in before}


def check_placement(cluster, args, output):
    """Workers on the hosts after the servers', as dmlc_tracker's ssh launcher places them (servers print nothing)."""
    found = sorted(line.split("@", 1)[1].split("]", 1)[0] for line in output.splitlines()
                   if line.startswith("[worker ") and "@launch: kvstore rank" in line)
    if found != sorted(cluster.addresses[args.servers:]):
        sys.exit("ps_traffic.py: workers on %s, expected %s" % (found, cluster.addresses[args.servers:]))


def kv_worker(args):
    """A process of the kvstore driver's job: scheduler and servers serve as MXNet starts them; a worker pushes and
    pulls every array ``args.kv_worker`` + 2 times (as many steps as the benchmark runs)."""
    import mxnet as mx  # a server or the scheduler serves here, and exits

    from dpn_mxnet.launcher.supervisor import announce_rank

    kv = mx.kv.create("dist_sync")
    announce_rank(kv)
    if args.compression:
        kv.set_gradient_compression({"type": "2bit", "threshold": args.compression})
    kv.set_optimizer(mx.optimizer.SGD(learning_rate=0.01))
    sizes = parameter_sizes(args.network, args.size)
    weights = [mx.nd.zeros(count) for count in sizes]
    gradients = [mx.nd.ones(count) for count in sizes]
    for key, weight in enumerate(weights):
        kv.init(key, weight)
    for _ in range(args.kv_worker + BENCHMARK_WARMUP):
        for key, (weight, gradient) in enumerate(zip(weights, gradients)):
            kv.push(key, gradient, priority=-key)
            kv.pull(key, out=weight, priority=-key)
        mx.nd.waitall()


def main(argv=None):
    args = parse_args(argv)
    if args.kv_worker is not None:
        return kv_worker(args)
    sizes = parameter_sizes(args.network, args.size)
    started = time.time()
    with simulated.Cluster(args.servers + args.workers) as cluster:
        first = run_job(cluster, args, args.steps[0])
        second = run_job(cluster, args, args.steps[1])
    per_step = {index: (second[index] - first[index]) / (args.steps[1] - args.steps[0]) for index in first}
    servers = [per_step[index] for index in range(1, args.servers + 1)]
    workers = [per_step[index] for index in range(args.servers + 1, args.servers + args.workers + 1)]
    minimum = 2 * 4 * sum(sizes)
    mean_server = sum(servers) / len(servers)
    print(json.dumps({
        "network": args.network, "parameters": sum(sizes), "arrays": len(sizes), "servers": args.servers,
        "workers": args.workers, "bound": args.bound, "driver": args.driver, "compression": args.compression, "train_args": args.train_args,
        "minimum_bytes_per_worker": minimum,
        "worker_bytes_per_step": [round(b) for b in workers],
        "worker_vs_minimum": round(sum(workers) / len(workers) / minimum, 4),
        "server_bytes_per_step": [round(b) for b in servers],
        "server_vs_share": round(mean_server / (minimum * args.workers / args.servers), 4),
        "server_max_over_mean": round(max(servers) / mean_server, 4),
        "predicted_max_over_mean": round(predicted_balance(sizes, args.servers, args.bound), 4),
        "seconds": round(time.time() - started)}))


if __name__ == "__main__":
    main()

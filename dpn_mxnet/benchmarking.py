"""What both sides of the benchmark share (MXNet in .venv, timm in .venv-timm): the command line, the timing
loop, the peak-memory reading and the one JSON line each run prints. Imports no deep-learning framework."""
import json
import resource
import statistics
import time

import symbols

MODES = ("train", "infer", "score")
SCORE_SIZE = 320  # the authors' test size for the mean-max scoring graph


def add_arguments(parser):
    """The options both benchmark scripts take."""
    parser.add_argument("--network", default="dpn92", help="DPN variant (%s)" % ", ".join(symbols.VARIANTS))
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (per device with --gpus)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side; default 224, or %d for --mode score" % SCORE_SIZE)
    parser.add_argument("--mode", choices=MODES, default="train",
                        help="train: forward, backward and SGD update; infer: forward at --size; score: the "
                             "fully-convolutional mean-max test graph (test-time pooling in timm)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps; the median counts")


def check_arguments(parser, args):
    """Fills in the default size and rejects impossible counts with one-line errors."""
    if args.size is None:
        args.size = SCORE_SIZE if args.mode == "score" else 224
    for flag in ("batch_size", "size", "repeats"):
        if getattr(args, flag) <= 0:
            parser.error("--%s must be positive, got %d" % (flag.replace("_", "-"), getattr(args, flag)))
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more, got %d" % args.warmup)
    return args


def step_times(step, warmup, repeats):
    """Seconds taken by each of ``repeats`` calls of ``step`` (which returns once its work is done), after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def peak_memory_mb():
    """Peak resident memory of this process so far (VmHWM), in MB of 2**20 bytes."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def report(framework, args, images_per_step, times, **extra):
    """Prints the run's result as one JSON line: images per second over the median step, and peak memory."""
    result = {"framework": framework, "model": args.network, "mode": args.mode, "batch_size": args.batch_size,
              "size": args.size, "img_per_s": round(images_per_step / statistics.median(times), 3),
              "step_s": [round(t, 4) for t in times], "peak_mb": round(peak_memory_mb(), 1)}
    result.update(extra)
    print(json.dumps(result), flush=True)
    return result

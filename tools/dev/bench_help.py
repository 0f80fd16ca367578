"""Time every entry point's --help, as a user starts it (a new interpreter each time): a command line is parsed
without loading MXNet, so help comes at once.

    python tools/dev/bench_help.py               # median of 3 starts per entry point, in seconds
    python tools/dev/bench_help.py --repeats 5

Prints one row per entry point (median, slowest) and the interpreter's own start-up for comparison.
"""
import pathlib
import statistics
import subprocess
import sys
import time

from dpn_mxnet import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
ENTRY_POINTS = ["train/train_imagenet.py", "test/score.py"] + sorted(
    str(path.relative_to(REPO)) for path in (REPO / "tools").glob("*.py") if path.name != "__init__.py")


def seconds(command):
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:  # e.g. tools/bench_timm.py outside .venv-timm
        return "fails: %s" % (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
    return elapsed


def main(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="starts per entry point")
    args = parser.parse_args(argv)
    cli.check_positive(parser, args, "repeats")
    bare = [seconds([sys.executable, "-c", "pass"]) for _ in range(args.repeats)]
    print("| entry point | --help median (s) | slowest (s) |")
    print("|---|---:|---:|")
    print("| python -c pass | %.2f | %.2f |" % (statistics.median(bare), max(bare)))
    for path in ENTRY_POINTS:
        times = [seconds([sys.executable, path, "--help"]) for _ in range(args.repeats)]
        failed = [t for t in times if isinstance(t, str)]
        print("| %s | %s |" % (path, failed[0] + " | " if failed else "%.2f | %.2f" % (statistics.median(times),
                                                                                     max(times))))


if __name__ == "__main__":
    main()

"""MXNet (this repository) and timm side by side on synthetic data: one table of img/s and peak memory.

Every measurement runs in a fresh process: tools/dev/benchmark.py under this interpreter, tools/dev/bench_timm.py under
--timm-python (``make bench-timm`` builds .venv-timm). The two frameworks alternate, their order flips every
round, and each figure is the median over rounds of each run's median step. A case is MODEL:MODE:BATCH, with
``/authors``, ``/cpu`` or ``/cpu-lean`` to choose the MXNet graph's arrangement (tools/dev/benchmark.py
--arrangement; by default the one the entry points choose: cpu on oneDNN CPUs); its timm figure is that of
MODEL:MODE:BATCH.
"""
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

import symbols
from dpn_mxnet import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
MODES = ("train", "infer", "score")
DEFAULT_CASES = (["%s:%s" % (model, case) for model in ("dpn68", "dpn92")
                  for case in ("train:16", "train:32", "infer:16", "score:16")]
                 + ["dpn92:train:16/cpu-lean", "dpn68:infer:16/authors", "dpn92:infer:16/authors",
                    "dpn92:score:16/authors"])


class CaseError(ValueError):
    """A --cases entry that cannot be parsed."""


def parse_case(text):
    """'dpn92:train:16/cpu-lean' -> ('dpn92', 'train', 16, 'cpu-lean')."""
    spec, _, option = text.partition("/")
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in MODES or not parts[2].isdigit() or int(parts[2]) <= 0:
        raise CaseError("--cases: %r is not MODEL:MODE:BATCH with MODE one of %s" % (text, ", ".join(MODES)))
    if option and option not in symbols.ARRANGEMENTS:
        raise CaseError("--cases: unknown arrangement /%s in %r (known: %s)"
                        % (option, text, ", ".join("/" + name for name in symbols.ARRANGEMENTS)))
    return parts[0], parts[1], int(parts[2]), option


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="what to measure, in order")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per framework and case (the median of 3 or more ignores one outlying run)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps in each run")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps in each run")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--timm-python", default=str(REPO / ".venv-timm" / "bin" / "python"),
                        help="interpreter of the timm environment")
    parser.add_argument("--json-out", default=None, help="also write every run's JSON line to this file")
    args = parser.parse_args(argv)
    try:
        args.cases = [parse_case(c) for c in args.cases]
    except CaseError as err:
        parser.error(str(err))
    for flag in ("rounds", "repeats", "threads"):
        if getattr(args, flag) <= 0:
            parser.error("--%s must be positive" % flag)
    if not os.access(args.timm_python, os.X_OK):
        parser.error("--timm-python: %s is not an executable (run `make bench-timm` to build .venv-timm)"
                     % args.timm_python)
    return args


def run(command, threads):
    """Runs one measurement process; returns its JSON result, or raises RuntimeError with its last words."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MXNET_SUBGRAPH_VERBOSE="0")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
        raise RuntimeError("%s: %s" % (" ".join(command[2:]), last))
    return json.loads(lines[-1])


def measure(args):
    """{case: {'mxnet': [results], 'timm': [results]}} over all rounds, frameworks alternating."""
    results = {case: {"mxnet": [], "timm": []} for case in args.cases}
    timm_cases = sorted({case[:3] for case in args.cases}, key=[c[:3] for c in args.cases].index)
    for r in range(args.rounds):
        for model, mode, batch in timm_cases:
            common = ["--network", model, "--mode", mode, "--batch-size", str(batch),
                      "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            runs = [("timm", [args.timm_python, "-m", "tools.dev.bench_timm"] + common, None)]
            runs += [("mxnet", [sys.executable, "-m", "tools.dev.benchmark"] + common
                      + (["--arrangement", case[3]] if case[3] else []), case)
                     for case in args.cases if case[:3] == (model, mode, batch)]
            for framework, command, case in (runs if r % 2 else runs[::-1]):
                try:
                    result = run(command, args.threads)
                except RuntimeError as err:
                    result = {"error": str(err)}
                    print("warning: %s" % err, file=sys.stderr)
                for target in ([case] if case else [c for c in args.cases if c[:3] == (model, mode, batch)]):
                    results[target][framework].append(result)
                if args.json_out:
                    with open(args.json_out, "a") as out:
                        out.write(json.dumps(result) + "\n")
    return results


def summary(runs, key):
    values = [r[key] for r in runs if key in r]
    if len(values) < len(runs) or not values:
        return None
    return statistics.median(values) if key == "img_per_s" else max(values)


def machine():
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "%s, %d cores" % (model, os.cpu_count())


def table(args, results):
    def fmt(value, spec):
        return "failed" if value is None else spec % value

    lines = ["| model | mode | batch | size | MXNet img/s | timm img/s | ratio | MXNet peak MB | timm peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case, runs in results.items():
        model, mode, batch, option = case
        mx_speed, timm_speed = summary(runs["mxnet"], "img_per_s"), summary(runs["timm"], "img_per_s")
        ratio = mx_speed / timm_speed if mx_speed and timm_speed else None
        size = next((r["size"] for r in runs["mxnet"] + runs["timm"] if "size" in r), "?")
        arrangement = next((r["arrangement"] for r in runs["mxnet"] if "arrangement" in r), option or "?")
        label = "%s (%s)" % (mode, arrangement)
        lines.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (
            model, label, batch, size, fmt(mx_speed, "%.2f"), fmt(timm_speed, "%.2f"), fmt(ratio, "%.2fx"),
            fmt(summary(runs["mxnet"], "peak_mb"), "%.0f"), fmt(summary(runs["timm"], "peak_mb"), "%.0f")))
    versions = sorted({r["versions"] for runs in results.values() for side in runs.values() for r in side
                       if "versions" in r})
    lines.append("")
    lines.append("%s; OMP_NUM_THREADS=%d; %s; median of %d rounds x %d timed steps (after %d warm-up)."
                 % (machine(), args.threads, "; ".join(versions), args.rounds, args.repeats, args.warmup))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    results = measure(args)
    print(table(args, results))
    if any("error" in r for runs in results.values() for side in runs.values() for r in side):
        sys.exit("error: some runs failed (warnings above)")


if __name__ == "__main__":
    main()

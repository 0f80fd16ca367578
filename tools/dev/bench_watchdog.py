"""What the stall watchdog costs: a worker's progress call per training step, and its guard's report.

    python tools/dev/bench_watchdog.py [--calls N] [--reports N]

Prints one JSON line: microseconds per ``Progress`` call (what a worker adds to every step; a marker line is printed
at most once a second), and CPU milliseconds per guard report while the command is busy (process state only) and
while it is idle (the TCP table is read, at most every ``remote_guard.SCAN_S`` seconds).
"""
import contextlib
import io
import json
import os
import socket
import time

from dpn_mxnet import cli
from dpn_mxnet.launcher import remote_guard
from dpn_mxnet.launcher.progress import Progress


def cpu_ms_per_call(function, calls):
    start = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - start) / calls * 1e3


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000000, help="progress calls timed")
    parser.add_argument("--reports", type=int, default=200, help="guard reports timed, each way")
    args = parser.parse_args(argv)
    progress = Progress(enabled=True)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        for step in range(args.calls):
            progress(step)
        per_call_us = (time.perf_counter() - start) / args.calls * 1e6
    with socket.socket() as listening:  # one listening socket, like a ps-lite node
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        reporter = remote_guard.Reporter(os.getpid())
        reporter.scanned = float("inf")  # never scans: the busy case
        busy = cpu_ms_per_call(reporter.line, args.reports)
        scan = cpu_ms_per_call(lambda: remote_guard._tcp(os.getpid(), remote_guard._sockets(os.getpid())),
                               args.reports)
    print(json.dumps({"progress_call_us": round(per_call_us, 3), "guard_report_busy_cpu_ms": round(busy, 3),
                      "guard_tcp_scan_cpu_ms": round(scan, 2), "guard_scan_every_s": remote_guard.SCAN_S}))


if __name__ == "__main__":
    main()

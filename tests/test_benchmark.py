"""tools/dev/benchmark.py prints one JSON line per run; the side-by-side driver reads its cases strictly."""
import json
import statistics
import subprocess
import sys

import mxnet as mx
import pytest

import symbols
from tools.dev.bench_side_by_side import CaseError, parse_case
from tools.dev.benchmark import graph_digest

from conftest import REPO

TINY = ('{"stem_filters": 16, "stem_kernel": 3, "k_r": 32, "groups": 8, "k_sec": [1, 1, 1, 1], '
        '"inc_sec": [16, 16, 16, 16], "bw_base": 32}')


def benchmark(*args):
    return subprocess.run([sys.executable, "-m", "tools.dev.benchmark", "--network", TINY, "--batch-size", "2",
                           "--warmup", "0", "--repeats", "2"] + list(args), cwd=REPO, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def entry_point_graph(mode, size, name):
    """The graph each entry point binds for ``mode`` (train_imagenet.py, predict.py, score.py) in arrangement
    ``name``."""
    arrangement = symbols.ARRANGEMENTS[name]
    if mode == "train":
        return symbols.get_symbol(TINY, image_size=size, arrangement=arrangement)
    if mode == "infer":
        return mx.sym.SoftmaxOutput(symbols.logits(TINY, image_size=size, arrangement=arrangement.for_inference()),
                                    name="softmax")
    return symbols.score_symbol(TINY, image_size=size, arrangement=arrangement.for_inference())


@pytest.mark.parametrize("mode, size, option, arrangement", [
    ("train", 64, "auto", "cpu"), ("infer", 64, "auto", "cpu"), ("infer", 64, "authors", "authors"),
    ("score", 224, "auto", "cpu"), ("score", 224, "authors", "authors")])
def test_benchmark_prints_one_json_line(mode, size, option, arrangement):
    """One JSON line: images per second over the median step, the arrangement named and its graph bound."""
    done = benchmark("--mode", mode, "--size", str(size), "--arrangement", option, "--repeats", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip())
    assert (result["mode"], result["size"], result["arrangement"], len(result["step_s"])) == (mode, size,
                                                                                             arrangement, 3)
    assert result["graph_sha1"] == graph_digest(entry_point_graph(mode, size, arrangement))
    median = statistics.median(result["step_s"])  # each step time is rounded to 0.1 ms
    assert 2 / (median + 5e-5) <= result["img_per_s"] * (1 + 1e-3) and result["img_per_s"] <= 2 / (median - 5e-5)
    assert result["peak_mb"] > 100  # MXNet alone takes more than 100 MB


@pytest.mark.parametrize("args, message", [
    (["--size", "16"], "error: --size: input size 16 is too small"),
    (["--arrangement", "turbo"], "invalid choice: 'turbo'"),
    (["--repeats", "0"], "--repeats must be positive")])
def test_benchmark_rejects_bad_flags_in_one_line(args, message):
    done = benchmark(*args)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_side_by_side_cases():
    assert parse_case("dpn92:train:16/cpu-lean") == ("dpn92", "train", 16, "cpu-lean")
    assert parse_case("dpn68:score:8") == ("dpn68", "score", 8, "")
    assert parse_case("dpn92:score:16/authors") == ("dpn92", "score", 16, "authors")
    for bad in ("dpn92:fit:16", "dpn92:train", "dpn92:train:x", "dpn92:train:16/lean"):
        with pytest.raises(CaseError):
            parse_case(bad)

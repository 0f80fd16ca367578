"""tools/plot_log.py draws the metrics file: accuracy, training loss with the learning rate and its steps, speed
from 0."""
import subprocess
import sys

import numpy as np

from dpn_mxnet import checkpoint

from conftest import REPO
from tools import plot_log


def summaries():
    return [{"epoch": e, "train_top1": 0.1 * e, "train_cross-entropy": 2.0 / e, "train_images_per_second": 90 + e,
             "learning_rate": 0.1 if e <= 3 else 0.01 if e <= 5 else 0.001, "val_top1_error": 80 - e,
             "val_top5_error": 50 - e} for e in range(1, 8)]


def test_plot_shows_loss_learning_rate_steps_and_speed_from_zero(tmp_path):
    figure = plot_log.plot(summaries(), tmp_path / "curves.png", "run")
    accuracy, loss, speed, rate = figure.axes
    np.testing.assert_allclose(loss.get_lines()[0].get_ydata(), [2.0 / e for e in range(1, 8)])
    assert sorted(rate.get_lines()[0].get_ydata()) == sorted([0.1] * 3 + [0.01] * 2 + [0.001] * 2)
    steps = [line.get_xdata()[0] for line in loss.get_lines()[1:]]
    assert steps == plot_log.rate_steps(summaries()) == [3, 5]
    assert speed.get_ylim()[0] == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reads_the_metrics_file_and_refuses_other_files(tmp_path):
    prefix = str(tmp_path / "run")
    for summary in summaries():
        checkpoint.write_metrics(prefix, summary)
    done = subprocess.run([sys.executable, "tools/plot_log.py", checkpoint.metrics_path(prefix)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == prefix + "-metrics.png"
    log = tmp_path / "run-train.log"
    log.write_text("2026-01-01 rank 0 INFO epoch-summary {}\n")
    for path, message in ((tmp_path / "missing.jsonl", "no such metrics file"), (log, "is not a metrics file")):
        done = subprocess.run([sys.executable, "tools/plot_log.py", str(path)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr

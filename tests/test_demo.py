"""The main job (`make demo`) end to end in a reduced form: fewer digits and epochs, the same commands."""
import json
import subprocess
import sys

import onnx

from dpn_mxnet import checkpoint, data

from conftest import REPO


def test_reduced_demo_writes_everything_and_learns(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "tools/demo.py", "--out", str(out), "--limit", "400", "--epochs", "6",
                           "--batch-size", "8"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "=== demo summary" in done.stdout
    summary = json.loads((out / "summary.json").read_text())

    digits = out / "digits"
    assert data.num_records(digits / "train.rec") + data.num_records(digits / "val.rec") == 400
    prefix = str(out / "dpn-digits")
    assert checkpoint.available_epochs(prefix) == [4, 5, 6]  # the default retention: the last 3
    assert (out / "dpn-digits-symbol.json").is_file() and (out / "dpn-digits-0006.states").is_file()
    metrics = checkpoint.read_metrics(checkpoint.metrics_path(prefix))
    assert [s["epoch"] for s in metrics] == list(range(1, 7)) and metrics[-1] == summary["last_epoch"]

    at_training_size, meanmax = summary["scores"]
    assert at_training_size["size"] == 32 and not at_training_size["meanmax"]
    assert meanmax["size"] == 40 and meanmax["meanmax"]
    assert at_training_size["images"] == meanmax["images"] == data.num_records(digits / "val.rec")
    assert at_training_size["top1_error"] < 60, "10 classes: chance is 90 % error"
    # the same checkpoint scored by training (the CPU arrangement) and by score.py (its inference form):
    # float rounding may flip a near tie, one image at most
    one_image = 100.0 / at_training_size["images"]
    assert abs(summary["last_epoch"]["val_top1_error"] - at_training_size["top1_error"]) <= one_image + 1e-3

    assert (out / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    onnx.checker.check_model(onnx.load(str(out / "dpn-digits.onnx")))
    assert summary["onnx"]["max_abs_logit_diff"] < 1e-4

    again = subprocess.run([sys.executable, "tools/demo.py", "--out", str(out), "--limit", "400", "--epochs", "6",
                           "--batch-size", "8"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reusing the trained checkpoint" in again.stdout

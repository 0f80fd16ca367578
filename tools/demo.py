"""The whole reproduction in minutes on this machine: scikit-learn's 1,797 handwritten digit scans, packed to
RecordIO, a small DPN trained by 2 workers + 1 server with kvstore dist_sync through the launcher on 127.0.0.1,
scored at the training size and with mean-max at a larger size, its curves drawn and the model exported to ONNX.

    python tools/demo.py                 # what `make demo` runs
    python tools/demo.py --limit 300 --epochs 3 --out /tmp/demo   # a reduced run

Every step is one of the project's commands, printed before it runs. A second run reuses the data and the
trained checkpoint when they are there.
"""
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

from dpn_mxnet import cli
from dpn_mxnet.launcher.hostfile import read_hostfile

# MXNet and what needs it load on first use, once the command line is parsed (--help does not wait for them)
checkpoint, data = (cli.lazy_import("dpn_mxnet." + name) for name in ("checkpoint", "data"))

REPO = pathlib.Path(__file__).resolve().parents[1]
# A small DPN for 32x32 images: two stages (1 and 2 dual-path blocks), so that the features are still 4x4 and
# the fully-convolutional test at a larger size has room to slide; channel counts are multiples of 16 (oneDNN).
NETWORK = {"stem_filters": 16, "stem_kernel": 3, "k_r": 32, "groups": 8, "k_sec": [1, 2], "inc_sec": [16, 16],
           "bw_base": 32}
# The authors' augmentation adapted to 32 px digits: crops of at least 35 % of the area, no mirror (a flipped
# digit is another glyph); aspect 3/4-4/3 and the HSL jitter as theirs.
AUGMENTATION = ["--min-area", "0.35", "--no-mirror"]
SIZE = 32


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--out", default="work/demo", help="folder for everything the demo writes")
    parser.add_argument("--limit", type=int, help="use only this many digit scans (default: all 1,797)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=32, help="batch per worker")
    parser.add_argument("--test-size", type=int, default=40, help="the larger size scored with mean-max")
    parser.add_argument("--hostfile", help="train over ssh with one worker and one server per host of this "
                                           "hostfile (default: 2 workers + 1 server on 127.0.0.1)")
    return parser.parse_args(argv)


def run(command, capture=False):
    """Run one of the project's commands, showing it; with ``capture`` return its last stdout line as JSON."""
    print("\n$ " + " ".join(shlex.quote(str(c)) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], cwd=REPO, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if done.returncode:
        sys.exit("demo: step failed (exit code %d): %s" % (done.returncode, command[1]))
    return json.loads(done.stdout.strip().splitlines()[-1]) if capture else None


def placement(hostfile):
    """The launcher's options: 2 workers + 1 server on loopback, or a worker and a server on every host."""
    if hostfile is None:
        return ["-n", 2, "-s", 1, "--launcher", "local", "--host-ip", "127.0.0.1"]
    nodes = len(read_hostfile(hostfile))
    return ["-n", nodes, "-s", nodes, "--launcher", "ssh", "-H", hostfile]


def main(argv=None):
    args = parse_args(argv)
    out = (REPO / args.out).resolve()
    python = sys.executable
    start = time.time()

    digits = out / "digits"
    run([python, "tools/make_digits.py", digits] + (["--limit", args.limit] if args.limit else []))

    prefix = out / "dpn-digits"
    if args.epochs in checkpoint.available_epochs(str(prefix)):
        print("\nreusing the trained checkpoint %s" % checkpoint.params_path(str(prefix), args.epochs))
    else:
        run([python, "tools/launch.py"] + placement(args.hostfile) + [
             "python", "train/train_imagenet.py", "--network", json.dumps(NETWORK), "--num-classes", 10,
             "--size", SIZE, "--data-train", digits / "train.rec", "--data-val", digits / "val.rec",
             "--kv-store", "dist_sync", "--batch-size", args.batch_size, "--num-epochs", args.epochs,
             "--lr", 0.1, "--lr-steps", max(1, args.epochs * 4 // 5), "--model-prefix", prefix,
             "--disp-batches", 10, "--resume", "auto"] + AUGMENTATION)

    scores = [run([python, "test/score.py", "--model-prefix", prefix, "--load-epoch", args.epochs, "--data-val",
                   digits / "val.rec", "--size", size, "--json"] + (["--meanmax"] if meanmax else []), capture=True)
              for size, meanmax in ((SIZE, False), (args.test_size, True))]
    curves = out / "training-curves.png"
    run([python, "tools/plot_log.py", checkpoint.metrics_path(str(prefix)), "-o", curves])
    onnx = run([python, "tools/export_onnx.py", "--model-prefix", prefix, "--load-epoch", args.epochs,
                "-o", out / "dpn-digits.onnx"], capture=True)

    last = checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))[-1]
    print("\n=== demo summary (%.0f s) ===" % (time.time() - start))
    print("data      %d train / %d val digit scans, %dx%d, packed to %s"
          % (data.num_records(digits / "train.rec"), data.num_records(digits / "val.rec"), SIZE, SIZE, digits))
    launcher = placement(args.hostfile)
    print("training  %d workers + %d servers (%s launcher), dist_sync, %d epochs, %.0f img/s per worker in the last "
          "epoch" % (launcher[1], launcher[3], launcher[5], last["epoch"], last["train_images_per_second"]))
    for row in scores:
        print("score     %dx%d%s: top-1 accuracy %.2f %%, top-5 %.2f %% (%d images, %.0f img/s)"
              % (row["size"], row["size"], " mean-max" if row["meanmax"] else "", 100 - row["top1_error"],
                 100 - row["top5_error"], row["images"], row["images_per_second"]))
    print("onnx      %s, max |logit difference| vs MXNet %.2e" % (onnx["onnx"], onnx["max_abs_logit_diff"]))
    print("files     %s-{symbol.json,%04d.params,%04d.states,%04d.recipe.json,model.json,metrics.jsonl,train.log}"
          % (prefix, args.epochs, args.epochs, args.epochs))
    print("          %s" % curves)
    os.makedirs(out, exist_ok=True)
    with open(out / "summary.json", "w") as f:
        json.dump({"scores": scores, "onnx": onnx, "last_epoch": last, "seconds": round(time.time() - start)}, f,
                  indent=1)


if __name__ == "__main__":
    main()

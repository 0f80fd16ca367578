"""Draw a training log's per-epoch accuracy and speed as a PNG.

    python tools/plot_log.py checkpoints/dpn92-train.log -o curves.png

Reads the ``epoch-summary`` lines that train/train_imagenet.py writes once per epoch (a resumed run appends
to the same log; the latest line of each epoch wins).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from dpn_mxnet import cli  # noqa: E402
from dpn_mxnet.fit import SUMMARY_TAG  # noqa: E402


def read_summaries(path):
    """{epoch: summary dict} from a training log."""
    epochs = {}
    with open(path) as f:
        for line in f:
            if SUMMARY_TAG in line:
                summary = json.loads(line.split(SUMMARY_TAG, 1)[1])
                epochs[summary["epoch"]] = summary
    return dict(sorted(epochs.items()))


def plot(summaries, out, title):
    epochs = list(summaries)
    fig, (acc, speed) = plt.subplots(1, 2, figsize=(11, 4))
    acc.plot(epochs, [100 * s["train_top1"] for s in summaries.values()], "o-", label="train top-1")
    validated = [e for e, s in summaries.items() if "val_top1_error" in s]
    if validated:
        acc.plot(validated, [100 - summaries[e]["val_top1_error"] for e in validated], "o-", label="val top-1")
        acc.plot(validated, [100 - summaries[e]["val_top5_error"] for e in validated], "o--", label="val top-5")
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    acc.grid(alpha=0.3)
    acc.legend()
    speed.plot(epochs, [s["train_images_per_second"] for s in summaries.values()], "o-")
    speed.set(xlabel="epoch", ylabel="img/s (this worker)", title="training speed")
    speed.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("log", help="training log written by train/train_imagenet.py")
    parser.add_argument("-o", "--out", help="PNG to write (default: the log's name with .png)")
    args = parser.parse_args()
    try:
        summaries = read_summaries(args.log)
    except OSError as err:
        sys.exit("error: cannot read %s: %s" % (args.log, err.strerror))
    if not summaries:
        sys.exit("error: %s has no '%s' lines: is it a train_imagenet.py log?" % (args.log, SUMMARY_TAG))
    out = args.out or args.log.rsplit(".", 1)[0] + ".png"
    plot(summaries, out, os.path.basename(args.log))
    print(out)


if __name__ == "__main__":
    main()

"""Draw a training run's per-epoch accuracy, loss, learning rate and speed as a PNG.

    python tools/plot_log.py checkpoints/dpn92-metrics.jsonl -o curves.png

Reads the metrics file that train/train_imagenet.py writes beside its checkpoints (``P-metrics.jsonl``, one epoch
summary per line; a resumed run replaces the epochs after its checkpoint).
"""
import os
import sys

from dpn_mxnet import cli

# what plotting needs loads on first use, once the command line is parsed (--help does not wait for it)
checkpoint = cli.lazy_import("dpn_mxnet.checkpoint")


def rate_steps(summaries):
    """The epochs after which the learning rate changed (the summary's rate is the one at the epoch's end)."""
    return [a["epoch"] for a, b in zip(summaries, summaries[1:]) if a.get("learning_rate") != b.get("learning_rate")]


def plot(summaries, out, title):
    """Write the figure of ``summaries`` (epoch order) to ``out``; returns it."""
    epochs = [s["epoch"] for s in summaries]
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    fig, (acc, loss, speed) = plt.subplots(1, 3, figsize=(15, 4))
    acc.plot(epochs, [100 * s["train_top1"] for s in summaries], "o-", label="train top-1")
    validated = [s for s in summaries if "val_top1_error" in s]
    if validated:
        acc.plot([s["epoch"] for s in validated], [100 - s["val_top1_error"] for s in validated], "o-",
                 label="val top-1")
        k = next(key[len("val_top"):-len("_error")] for key in validated[0]
                 if key.startswith("val_top") and key.endswith("_error") and key != "val_top1_error")
        acc.plot([s["epoch"] for s in validated], [100 - s["val_top%s_error" % k] for s in validated], "o--",
                 label="val top-%s" % k)
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    acc.legend()

    loss.plot(epochs, [s["train_cross-entropy"] for s in summaries], "o-", color="C3", label="training loss")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss and learning rate")
    rate = loss.twinx()
    rate.step(epochs, [s["learning_rate"] for s in summaries], where="post", color="C2", label="learning rate")
    rate.set(ylabel="learning rate", yscale="log")
    for step in rate_steps(summaries):
        loss.axvline(step, color="C2", linestyle=":", alpha=0.7)
    loss.legend(handles=loss.get_lines()[:1] + rate.get_lines(), loc="upper right")

    speed.plot(epochs, [s["train_images_per_second"] for s in summaries], "o-")
    speed.set(xlabel="epoch", ylabel="img/s (this worker)", title="training speed", ylim=(0, None))
    for axes in (acc, loss, speed):
        axes.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return fig


def main():
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("metrics", help="P-metrics.jsonl written by train/train_imagenet.py beside its checkpoints")
    parser.add_argument("-o", "--out", help="PNG to write (default: the metrics file's name with .png)")
    args = parser.parse_args()
    if not os.path.isfile(args.metrics):
        sys.exit("error: %s: no such metrics file (train/train_imagenet.py writes P-metrics.jsonl)" % args.metrics)
    try:
        summaries = checkpoint.read_metrics(args.metrics)
    except OSError as err:
        sys.exit("error: cannot read %s: %s" % (args.metrics, err.strerror))
    except (ValueError, KeyError):
        sys.exit("error: %s is not a metrics file (one JSON epoch summary per line)" % args.metrics)
    if not summaries:
        sys.exit("error: %s holds no epochs yet" % args.metrics)
    out = args.out or args.metrics.rsplit(".", 1)[0] + ".png"
    plot(summaries, out, os.path.basename(args.metrics))
    print(out)


if __name__ == "__main__":
    main()

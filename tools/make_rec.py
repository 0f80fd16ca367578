"""Pack a folder of images, one sub-folder per class, into RecordIO (.lst + .rec + .idx) for training and scoring.

    python tools/make_rec.py my_photos data/my_rec --val-fraction 0.2                    # my_photos/<class>/*
    python tools/make_rec.py /data/imagenet /data/rec --val-labels /data/imagenet/val.txt --val-resize 320

A plain folder (no train/ or val/ inside) holds one folder per class; --val-fraction draws that fraction of each
class for validation at random from --seed (the draw is written to train.lst and val.lst). An ImageNet-style
folder has DATA/train/<class>/* and DATA/val, either the same per-class layout or a flat folder with a label file
(--val-labels). Labels are line numbers in the class index OUT/classes.txt: --classes, by default the ImageNet-1k
index (data_lists/) where every class folder is an ImageNet-1k class, else the sorted folder names. Training
records keep the original bytes; validation records too unless --val-resize S (short side S, JPEG). Images the
record readers would not read as plain 3-channel JPEG/PNG (CMYK, palette, alpha, 16-bit, PNG data in a .jpg
file, ...) are re-encoded as RGB JPEG first, each listed in OUT/<split>.report.txt and on stdout. A packing that
fails leaves nothing behind.
"""
import os

from dpn_mxnet import cli


def main(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("data", help="folder of class folders, or with train/ and/or val/")
    parser.add_argument("out", help="output folder for classes.txt, train.{lst,rec,idx} and val.{lst,rec,idx}")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="fraction of each class's images drawn for validation (when DATA has no val/)")
    parser.add_argument("--classes", help="class index file, or 'auto' for the sorted class folder names (default: "
                                          "ImageNet-1k's index if every class folder is one of its classes, else "
                                          "auto)")
    parser.add_argument("--val-labels", help="label file for a flat DATA/val (default: per-class folders)")
    parser.add_argument("--train-labels", help="label file for DATA/train (default: per-class folders)")
    parser.add_argument("--val-resize", type=int, default=0,
                        help="resize validation images to this short side (>= the largest test size, e.g. 320); "
                             "0 keeps the original bytes")
    parser.add_argument("--num-thread", type=int, default=os.cpu_count(), help="processes for checking and packing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation draw and the training order")
    args = parser.parse_args(argv)
    if args.val_resize < 0 or args.num_thread < 1:
        parser.error("--val-resize must be >= 0 and --num-thread >= 1")
    if not 0 <= args.val_fraction < 1:
        parser.error("--val-fraction must be at least 0 and below 1, got %s" % args.val_fraction)
    from dpn_mxnet.checks import DataError, UsageError, check_output_folder, removed_on_failure
    from dpn_mxnet.packing import make_rec
    try:
        with removed_on_failure(args.out):
            check_output_folder(args.out, "output folder", create=True)
            make_rec(args.data, args.out, args.classes, args.val_labels, args.train_labels, args.num_thread,
                     args.val_resize, args.seed, args.val_fraction)
    except (DataError, UsageError) as err:
        parser.exit(2, "error: %s\n" % err)


if __name__ == "__main__":
    main()

"""Pack an ImageNet-style folder into RecordIO (.lst + .rec + .idx) with the im2rec that ships in the mxnet wheel.

    python tools/make_rec.py /data/imagenet /data/rec --num-thread 16
    python tools/make_rec.py /data/imagenet /data/rec --val-labels /data/imagenet/val.txt --val-resize 320

DATA/train/<class id>/* gives the training set; DATA/val is either the same per-class layout or a flat folder
with a label file (--val-labels). Labels are line numbers in the class index (--classes; default the ImageNet-1k
index in data_lists/, 'auto' = sorted folder names of DATA/train). Training records keep the original bytes;
validation records too unless --val-resize S (short side S, JPEG). Images the record readers would not read as
plain 3-channel JPEG/PNG (CMYK, palette, alpha, 16-bit, PNG data in a .JPEG file, ...) are re-encoded as RGB JPEG
first, and every such file is listed in OUT/<split>.report.txt and on stdout.
"""
import os

from dpn_mxnet import cli
from dpn_mxnet.checks import UsageError, check_output_folder, removed_on_failure
from dpn_mxnet.data import DataError
from dpn_mxnet.packing import IMAGENET_CLASSES, make_rec


def main(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("data", help="folder with train/ and/or val/")
    parser.add_argument("out", help="output folder for train.{lst,rec,idx} and val.{lst,rec,idx}")
    parser.add_argument("--classes", default=str(IMAGENET_CLASSES),
                        help="class index file, or 'auto' for the sorted folder names of DATA/train "
                             "(default: %(default)s)")
    parser.add_argument("--val-labels", help="label file for a flat DATA/val (default: per-class folders)")
    parser.add_argument("--train-labels", help="label file for DATA/train (default: per-class folders)")
    parser.add_argument("--val-resize", type=int, default=0,
                        help="resize validation images to this short side (>= the largest test size, e.g. 320); "
                             "0 keeps the original bytes (default: %(default)s)")
    parser.add_argument("--num-thread", type=int, default=os.cpu_count(),
                        help="processes for checking and packing (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training list shuffle (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.val_resize < 0 or args.num_thread < 1:
        parser.error("--val-resize must be >= 0 and --num-thread >= 1")
    try:
        with removed_on_failure(args.out):
            check_output_folder(args.out, "output folder", create=True)
            make_rec(args.data, args.out, args.classes, args.val_labels, args.train_labels, args.num_thread,
                     args.val_resize, args.seed)
    except (DataError, UsageError) as err:
        parser.exit(2, "error: %s\n" % err)


if __name__ == "__main__":
    main()

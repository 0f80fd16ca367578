"""Regenerate data_lists/imagenet1k_classes.txt from gluoncv's ImageNet-1k synsets.

Line i (0-based) of the file is label i: ``<WordNet id>\\t<short name>\\t<WordNet lemmas>``, sorted by WordNet id,
which is the label order of the released DPN models.

    python tools/make_class_index.py            # rewrites data_lists/imagenet1k_classes.txt
    python tools/make_class_index.py --check    # fails if the file differs from what gluoncv gives
"""
import argparse
import pathlib
import sys

from dpn_mxnet import cli

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "data_lists" / "imagenet1k_classes.txt"


def imagenet1k_lines():
    """The class index as text lines, from gluoncv's ImageNet-1k attributes (synsets, short and long names)."""
    from gluoncv.data.imagenet.classification import ImageNet1kAttr
    attr = ImageNet1kAttr()
    rows = sorted(zip(attr.synset, attr.classes, attr.classes_long))
    if len(rows) != 1000 or len({wnid for wnid, _, _ in rows}) != 1000:
        raise ValueError("gluoncv's ImageNet-1k table does not have 1000 distinct synsets")
    return ["%s\t%s\t%s" % row for row in rows]


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="class index file to write")
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = parser.parse_args(argv)
    text = "\n".join(imagenet1k_lines()) + "\n"
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            sys.exit("%s is not what gluoncv gives: run python tools/make_class_index.py" % args.out)
        print("%s matches gluoncv's ImageNet-1k synsets" % args.out)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("wrote %d classes to %s" % (text.count("\n"), args.out))


if __name__ == "__main__":
    main()

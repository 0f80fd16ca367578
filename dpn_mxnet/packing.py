"""Packing ImageNet-style folders into RecordIO (.lst + .rec + .idx) with the im2rec that ships in the mxnet wheel,
and the class index files: what tools/make_rec.py, tools/make_digits.py, prediction and the benchmarks share.

Images the record readers would not read as plain 3-channel JPEG/PNG (CMYK, palette, alpha, 16-bit, PNG data in a
.JPEG file, ...) are re-encoded as RGB JPEG first, and every such file is listed in OUT/<split>.report.txt.
"""
import importlib.util
import multiprocessing
import os
import pathlib
import random
import re
import subprocess
import sys

from dpn_mxnet.checks import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGENET_CLASSES = REPO / "data_lists" / "imagenet1k_classes.txt"
IMAGE_EXTS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
              ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
KEPT_FORMATS = {"JPEG", "PNG"}  # decoded to 3 channels by ImageRecordIter (colour or grey)
KEPT_MODES = {"RGB", "L"}
TINY = 32  # images with a side shorter than this are reported (and kept: the readers upscale them)
JPEG_QUALITY = 95


# ---------------------------------------------------------------------------------------------------------------
# Class index and split listings

def read_class_table(path):
    """(id, name) of each class in a class index file (line i = label i: ``<id>[\\t<name>...]``; the name is the
    id where the line has none)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError("%s: no such class index file" % path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DataError("%s: not a text class index (byte %d is not %s)" % (path, error.start, error.encoding)) \
            from None
    rows = [[field.strip() for field in line.split("\t")] for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError("%s: empty class index" % path)
    ids = [row[0] for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise DataError("%s: class ids listed twice: %s" % (path, ", ".join(duplicates[:5])))
    return [(row[0], row[1] if len(row) > 1 and row[1] else row[0]) for row in rows]


def read_class_index(path):
    """Class ids of a class index file, in label order."""
    return [class_id for class_id, _ in read_class_table(path)]


def rec_classes(rec):
    """(class table or None, number of classes, where that was read) of a .rec: the classes.txt beside it (what
    ``make_rec`` writes), else its largest label + 1."""
    index = pathlib.Path(rec).with_name("classes.txt")
    if index.is_file():
        table = read_class_table(index)
        return table, len(table), str(index)
    from dpn_mxnet.data.records import read_labels
    labels = read_labels(os.fspath(rec))
    return None, int(max(labels, default=-1)) + 1, "the labels of %s" % rec


def class_folders(folder):
    """Sorted names of the sub-folders of ``folder`` (the class ids of a class-folder data set)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError("%s: no such folder" % folder)
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _is_image(path):
    return path.suffix.lower() in IMAGE_EXTS


def list_class_folders(folder, classes):
    """[(path relative to folder, label)] for ``folder/<class id>/<image>``, labels from ``classes``."""
    folder, label_of = pathlib.Path(folder), {c: i for i, c in enumerate(classes)}
    items = []
    for name in class_folders(folder):
        if name not in label_of:
            raise DataError("%s: folder %r is not a class of the class index (%d classes); --classes auto takes "
                            "the classes from the folder names" % (folder / name, name, len(classes)))
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and _is_image(path):
                items.append((str(path.relative_to(folder)), label_of[name]))
    return items


def _resolve(folder, name):
    """The file a label-file entry names: relative to ``folder``; a missing extension is looked up."""
    path = folder / name.lstrip("/")
    if path.is_file():
        return path
    matches = [path.with_name(path.name + ext) for ext in (".JPEG", ".jpg", ".jpeg", ".png")]
    return next((m for m in matches if m.is_file()), None)


def list_label_file(folder, label_file, classes):
    """[(path relative to folder, label)] from a label file, one image per line:
    ``<file> <label>`` separated by spaces, tabs or a comma, with <label> a class id of the index or a 0-based
    integer (Caffe-style val.txt, Places365 lists, Kaggle LOC_val_solution.csv whose first line is a header);
    or an im2rec .lst (``<index>\\t<label>\\t<file>``). Further columns are ignored."""
    folder, label_file = pathlib.Path(folder), pathlib.Path(label_file)
    if not label_file.is_file():
        raise DataError("%s: no such label file" % label_file)
    label_of = {c: i for i, c in enumerate(classes)}
    items = []
    for number, line in enumerate(label_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if label_file.suffix == ".lst":
            fields = line.split("\t")
            name, label = fields[-1].strip(), fields[1].strip() if len(fields) >= 3 else ""
        else:
            fields = line.replace(",", " ").split()
            name, label = fields[0], fields[1] if len(fields) > 1 else ""
        integer = re.fullmatch(r"(\d+)(\.0*)?", label)
        if label in label_of:
            label = label_of[label]
        elif integer and int(integer.group(1)) < len(classes):
            label = int(integer.group(1))
        elif number == 1 and not re.fullmatch(r"[-+.\d]+", label):
            continue  # a header line such as Kaggle's "ImageId,PredictionString"
        else:
            raise DataError("%s line %d: %r is neither a class id of the index nor a label below %d"
                            % (label_file, number, label, len(classes)))
        path = _resolve(folder, name)
        if path is None:
            raise DataError("%s line %d: image %s not found in %s" % (label_file, number, name, folder))
        items.append((str(path.relative_to(folder)), label))
    if not items:
        raise DataError("%s: empty list, no images" % label_file)
    return items


# ---------------------------------------------------------------------------------------------------------------
# Odd images

def inspect_image(path):
    """(reason to re-encode or None, note or None) for one image file: decoded by OpenCV as the record readers do
    (an image it cannot decode is "unreadable"), its format and mode from its header (Pillow). Greyscale and tiny
    images are reported but kept: ImageRecordIter decodes them to 3 channels and resizes them like any other."""
    import cv2
    from PIL import Image
    if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
        return "unreadable: OpenCV cannot decode it", None
    try:
        with Image.open(path) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
    except Exception as err:  # Pillow raises several types for files it does not know
        return "a format Pillow does not read (%s)" % str(err).splitlines()[0], None
    expected = IMAGE_EXTS[pathlib.Path(path).suffix.lower()]
    reasons = []
    if fmt != expected:
        reasons.append("%s data in a %s file" % (fmt, pathlib.Path(path).suffix))
    elif fmt not in KEPT_FORMATS:
        reasons.append("%s format" % fmt)
    if mode not in KEPT_MODES:
        reasons.append("CMYK JPEG" if mode == "CMYK" else "mode %s" % mode)
    note = "greyscale" if mode == "L" and not reasons else None
    if min(width, height) < TINY:
        note = "tiny %dx%d" % (width, height)
    return ("; ".join(reasons) or None), note


def _inspect(args):
    root, name = args
    return inspect_image(os.path.join(root, name))


def convert_to_jpeg(source, target):
    """Decode ``source`` as the record readers would (OpenCV, 3-channel BGR) and write it as an RGB JPEG."""
    import cv2
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("%s: cannot be decoded" % source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise DataError("%s: cannot write" % target)


def fix_odd_images(root, items, converted_dir, threads):
    """Re-encode the images that are not plain RGB/grey JPEG or PNG. Returns the items (converted ones pointing at
    their new absolute path) and report rows (file, reason, action)."""
    with multiprocessing.Pool(max(1, threads)) as pool:
        findings = pool.map(_inspect, [(root, name) for name, _ in items], chunksize=256)
    unreadable = [name for (name, _), (reason, _) in zip(items, findings) if reason and reason.startswith("unreadable")]
    if unreadable:
        raise DataError("%s: %d unreadable image file(s) (OpenCV cannot decode them): %s%s"
                        % (root, len(unreadable), ", ".join(unreadable[:3]),
                           " and %d more" % (len(unreadable) - 3) if len(unreadable) > 3 else ""))
    fixed, report = [], []
    for (name, label), (reason, note) in zip(items, findings):
        if reason:
            target = pathlib.Path(converted_dir) / (name + ".jpg")  # a.png and a.JPEG must not collide
            convert_to_jpeg(pathlib.Path(root) / name, target)
            report.append((name, reason, "converted to RGB JPEG %s" % target))
            name = str(target.resolve())
        elif note:
            report.append((name, note, "kept"))
        fixed.append((name, label))
    return fixed, report


# ---------------------------------------------------------------------------------------------------------------
# Packing

def write_lst(path, items):
    """An im2rec list: ``<index>\\t<label>\\t<path>`` per image, index = record key."""
    for name, _ in items:
        if "\t" in name or "\n" in name:
            raise DataError("%r: a tab or newline in a file name cannot go into a .lst" % name)
    with open(path, "w") as out:
        out.writelines("%d\t%d\t%s\n" % (i, label, name) for i, (name, label) in enumerate(items))


def run_im2rec(lst, root, threads, resize=0):
    """Pack ``lst`` (images under ``root``) into the .rec/.idx beside it with mxnet/tools/im2rec.py: original
    bytes without ``resize``, else short side ``resize`` re-encoded as JPEG. Its progress goes to stdout."""
    im2rec = pathlib.Path(importlib.util.find_spec("mxnet").origin).parent / "tools" / "im2rec.py"
    command = [sys.executable, str(im2rec), str(lst), str(root), "--num-thread", str(max(1, threads))]
    command += ["--resize", str(resize), "--quality", str(JPEG_QUALITY)] if resize else ["--pass-through"]
    sys.stdout.flush()
    code = subprocess.run(command).returncode
    if code:
        raise DataError("im2rec failed on %s (exit status %d, its output is above)" % (lst, code))


def pack_split(name, root, items, out, num_classes, threads=4, resize=0, shuffle_seed=None):
    """Write OUT/<name>.lst/.rec/.idx (+ <name>.report.txt) from [(path, label)] under ``root``; training lists are
    shuffled once (``shuffle_seed``) so that contiguous shards of distributed workers mix all classes."""
    from dpn_mxnet.data.record_checks import check_rec
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not items:
        raise DataError("%s: empty list, no images found" % root)
    items, report = fix_odd_images(root, items, out / "converted" / name, threads)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(items)
    lst = out / (name + ".lst")
    write_lst(lst, items)
    run_im2rec(lst, root, threads, resize)
    rec = out / (name + ".rec")
    packed = check_rec(rec, num_classes)
    if packed != len(items):
        raise DataError("%s: im2rec packed %d of the %d images in %s" % (rec, packed, len(items), lst))
    report_path = out / (name + ".report.txt")
    report_path.unlink(missing_ok=True)
    if report:
        report_path.write_text("".join("%s\t%s\t%s\n" % row for row in report))
    converted = [row for row in report if row[2].startswith("converted")]
    for file, reason, _ in converted:
        print("%s: %s: %s" % (name, file, reason))
    kept = len(report) - len(converted)
    print("%s: %d images -> %s (%d re-encoded as RGB JPEG, %d greyscale or tiny kept as they are%s)"
          % (name, packed, rec, len(converted), kept, "; each listed in %s" % report_path.name if report else ""))
    return rec


def classes_for(folders, classes=None):
    """(class ids in label order, class index text) for class folders named ``folders``: from the class index file
    ``classes``; 'auto' or, by default, where a folder is not an ImageNet-1k class, the sorted folder names;
    by default the ImageNet-1k index where every folder (if any) is one of its classes."""
    if classes is None:
        imagenet = read_class_index(IMAGENET_CLASSES)
        classes = IMAGENET_CLASSES if set(folders) <= set(imagenet) else "auto"
    if str(classes) == "auto":
        if not folders:
            raise DataError("no class folders to take the class list from")
        return folders, "".join(c + "\n" for c in folders)
    return read_class_index(classes), pathlib.Path(classes).read_text()


def stratified_split(items, fraction, seed):
    """(train items, val items): within each class, ``fraction`` of its images (rounded, at least one where the
    class has two or more and ``fraction`` > 0) drawn at random from ``seed`` for validation."""
    by_class = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    rng, train, val = random.Random(seed), [], []
    for label in sorted(by_class):
        members = sorted(by_class[label])
        rng.shuffle(members)
        count = min(len(members) - 1, max(1, round(fraction * len(members)))) if fraction > 0 else 0
        val += sorted(members[:count])
        train += sorted(members[count:])
    return train, val


def make_rec(data, out, classes=None, val_labels=None, train_labels=None, threads=4, val_resize=0, seed=0,
             val_fraction=0.0):
    """Pack into OUT/train.* and OUT/val.* either DATA/train and DATA/val (whichever exist) or, when DATA has
    neither, DATA itself: one folder per class, ``val_fraction`` of each class drawn for validation
    (``stratified_split``, the draw from ``seed``). ``classes``: see ``classes_for``. Writes OUT/classes.txt;
    returns {split: .rec path}."""
    data, out = pathlib.Path(data), pathlib.Path(out)
    if not data.is_dir():
        raise DataError("%s: no such folder" % data)
    plain = not (data / "train").is_dir() and not (data / "val").is_dir()
    if not 0 <= val_fraction < 1:
        raise DataError("--val-fraction must be in [0, 1), got %s" % val_fraction)
    if val_fraction and (data / "val").is_dir():
        raise DataError("%s has a val/ folder: --val-fraction draws validation images from class folders only "
                        "when there is none" % data)
    train_folder = data if plain else data / "train"
    ids, index_text = classes_for(class_folders(train_folder) if train_folder.is_dir() else [], classes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text(index_text)
    return _pack(data, out, ids, plain, val_labels, train_labels, threads, val_resize, seed, val_fraction)


def _pack(data, out, ids, plain, val_labels, train_labels, threads, val_resize, seed, val_fraction):
    lists = {}
    for split, labels in (("train", train_labels), ("val", val_labels)):
        folder = data if plain and split == "train" else data / split
        if plain and split == "val" or not folder.is_dir():
            continue
        if labels:
            lists[split] = (folder, list_label_file(folder, labels, ids))
        elif class_folders(folder):
            lists[split] = (folder, list_class_folders(folder, ids))
        else:
            raise DataError("%s has no class folders: give its label file (--%s-labels)" % (folder, split))
    if val_fraction and "train" in lists:
        folder, items = lists["train"]
        train, val = stratified_split(items, val_fraction, seed)
        lists = {"train": (folder, train), "val": (folder, val)}
    if not lists:
        raise DataError("%s: neither train/ nor val/ found" % data)
    return {split: pack_split(split, folder, items, out, len(ids), threads, val_resize if split == "val" else 0,
                              seed if split == "train" else None)
            for split, (folder, items) in lists.items()}

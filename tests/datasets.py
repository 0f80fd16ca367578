"""Session fixtures with small real data sets, packed by the project's own command-line tools.

photo_rec   ImageNet-style folder of real photographs (scikit-image and scikit-learn samples) in three ImageNet-1k
            classes, plus odd files made from them (greyscale JPEG, CMYK JPEG, PNG named .JPEG, 20x15 image),
            packed by ``tools/make_rec.py`` (train: class folders; val: flat folder + val.txt label file).
digits_rec  300 of scikit-learn's handwritten digit scans at 32x32, packed by ``tools/make_digits.py --limit 300``.
"""
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

from dpn_mxnet.sample_photos import NAMES, sample_photo

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTO_CLASSES = ("n01440764", "n01443537", "n01484850")  # labels 0, 1, 2 of the ImageNet-1k index
ODD_FILES = {"grey.JPEG": "greyscale", "cmyk.JPEG": "CMYK", "png_inside.JPEG": "PNG data", "tiny.JPEG": "tiny"}


def photo(name):
    """A sample photograph as an RGB Pillow image."""
    from PIL import Image
    with Image.open(sample_photo(name)) as image:
        return image.convert("RGB")


def write_odd_files(folder, source):
    """The odd cases of real ImageNet, made from the photograph ``source``: greyscale JPEG, CMYK JPEG, PNG data
    in a .JPEG file, a 20x15 image."""
    folder.mkdir(parents=True, exist_ok=True)
    source.convert("L").save(folder / "grey.JPEG", "JPEG", quality=90)
    source.convert("CMYK").save(folder / "cmyk.JPEG", "JPEG", quality=90)
    source.save(folder / "png_inside.JPEG", "PNG")
    source.resize((20, 15)).save(folder / "tiny.JPEG", "JPEG", quality=90)


def run_tool(*args):
    """Run a project script as the user would; fail the test with its output when it fails."""
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        pytest.fail("%s failed (%d):\n%s%s" % (" ".join(map(str, args)), done.returncode, done.stdout, done.stderr))
    return done.stdout


@dataclass
class PhotoRec:
    data: pathlib.Path      # the ImageNet-style folder
    out: pathlib.Path       # make_rec's output folder
    train: pathlib.Path
    val: pathlib.Path
    log: str                # make_rec's stdout
    num_classes: int = 1000


@pytest.fixture(scope="session")
def photo_rec(tmp_path_factory):
    """ImageNet-style photo folder packed by tools/make_rec.py (classes = the ImageNet-1k index)."""
    data = tmp_path_factory.mktemp("photo_data")
    val_lines = []
    for number, name in enumerate(NAMES):
        image, wnid = photo(name), PHOTO_CLASSES[number % len(PHOTO_CLASSES)]
        (data / "train" / wnid).mkdir(parents=True, exist_ok=True)
        image.save(data / "train" / wnid / ("%s_%d.JPEG" % (wnid, number)), "JPEG", quality=90)
        half = image.crop((0, 0, image.width * 3 // 4, image.height))
        half.save(data / "train" / wnid / ("%s_%d_crop.JPEG" % (wnid, number)), "JPEG", quality=90)
        val_name = "ILSVRC2012_val_%08d.JPEG" % (number + 1)
        (data / "val").mkdir(exist_ok=True)
        image.save(data / "val" / val_name, "JPEG", quality=90)
        val_lines.append("%s %d" % (val_name, number % len(PHOTO_CLASSES)))
    write_odd_files(data / "train" / PHOTO_CLASSES[0], photo("coffee.png"))
    write_odd_files(data / "val", photo("chelsea.png"))
    val_lines += ["%s n01443537" % name for name in ODD_FILES]  # a label file may also name the class by its id
    (data / "val.txt").write_text("\n".join(val_lines) + "\n")
    out = tmp_path_factory.mktemp("photo_rec")
    log = run_tool("tools/make_rec.py", data, out, "--val-labels", data / "val.txt", "--num-thread", 2)
    return PhotoRec(data, out, out / "train.rec", out / "val.rec", log)


@dataclass
class DigitsRec:
    out: pathlib.Path
    train: pathlib.Path
    val: pathlib.Path
    num_classes: int = 10
    image_size: int = 32


@pytest.fixture(scope="session")
def digits_rec(tmp_path_factory):
    """300 handwritten digits (32x32, ~80/20 stratified split) packed by tools/make_digits.py."""
    out = tmp_path_factory.mktemp("digits")
    run_tool("tools/make_digits.py", out, "--limit", 300)
    return DigitsRec(out, out / "train.rec", out / "val.rec")


def break_image(rec, out, position):
    """A copy of ``rec`` (.rec, .idx, .lst) in ``out`` whose record number ``position`` (in file order) keeps its
    RecordIO and image-record headers but has the first bytes of its image overwritten (no decoder knows them).
    Returns (the copy's .rec, the broken record's id, its byte offset)."""
    import shutil
    import struct

    from dpn_mxnet.data import signatures

    rec, out = pathlib.Path(rec), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".rec", ".idx", ".lst"):
        shutil.copyfile(rec.with_suffix(suffix), out / (rec.stem + suffix))
    copy = out / rec.name
    offsets = sorted(int(line.split()[1]) for line in open(copy.with_suffix(".idx")))
    offset = offsets[position]
    blob = bytearray(copy.read_bytes())
    flag, _, record_id, _ = struct.unpack_from("IfQQ", blob, offset + 8)
    image = offset + 8 + 24 + 4 * flag
    assert signatures.is_image_signature(bytes(blob[image:image + signatures.SIGNATURE_BYTES]))
    blob[image:image + 8] = b"\0" * 8
    copy.write_bytes(bytes(blob))
    return copy, record_id, offset

"""ImageNet input pipeline on RecordIO files. Every iterator yields float32 NCHW batches, RGB, normalised as
(pixel - MEAN_RGB) * SCALE (``pixels``).

    records             .rec/.idx files: paths, record heads, counts, keys, labels, memory-mapped reads
    record_checks       whole-file checks before a run, copies without undecodable records
    signatures          the first bytes of the image formats OpenCV decodes
    image_record_iter   MXNet's ImageRecordIter, guarded
    validation          the authors' validation protocol (centre crop) and 10-crop testing
    images              single image files (tools/predict.py)
    training            training batches: shards, epochs as functions of (seed, part, epoch), aug stock or fork
    spec                the authors' augmentation: its parameters and what it does
    draws               its random draws (pass keys and orders, each sample's draws)
    kernel              its per-image work (crop, resize, HSL jitter, mirror, normalisation)
    pipeline            its iterator over a .rec, in worker threads (aug="fork")
    decode              a record's image decoded as OpenCV decodes it (for the pipeline)

The names below are those the entry points use, as ``data.NAME``; each loads its module on first use, so that
importing the package (as the entry points do before parsing their command line, and as its modules do) loads
neither MXNet nor OpenCV. The modules of the package import each name from the module that defines it.
"""
import importlib

_HOMES = {  # name: the module that defines it
    "DataError": "..checks", "MEAN_RGB": ".pixels", "SCALE": ".pixels",
    "UndecodableImage": ".images", "check_image_file": ".images", "load_image": ".images",
    "check_rec": ".record_checks", "readable_rec": ".record_checks",
    "keys_in_file_order": ".records", "num_records": ".records", "record_iter_threads": ".image_record_iter",
    "ten_crop_iter": ".validation", "val_iter": ".validation",
}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return getattr(importlib.import_module(_HOMES[name], __name__), name)

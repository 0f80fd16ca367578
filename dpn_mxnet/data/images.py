"""Single image files (tools/predict.py) under the validation protocol."""
import os

import mxnet as mx

from ..checks import DataError
from .pixels import BICUBIC, MEAN_RGB, SCALE
from .signatures import SIGNATURE_BYTES, is_image_signature


class UndecodableImage(DataError):
    """An image file that cannot be decoded."""


def check_image_file(path):
    """Raise DataError for a missing file, UndecodableImage for one whose first bytes are no image format."""
    if not os.path.isfile(path):
        raise DataError("%s: no such image file" % path)
    with open(path, "rb") as head:
        if not is_image_signature(head.read(SIGNATURE_BYTES)):
            raise UndecodableImage(_not_an_image(path))


def _not_an_image(path):
    return "%s: not an image MXNet can decode (JPEG, PNG, BMP, ...)" % path


def load_image(path, image_size, resize=None):
    """An image file as a (1, 3, S, S) batch under the validation protocol: short side resized (bicubic) to
    ``resize`` (default ``image_size``), centre ``image_size`` crop, RGB, (pixel - MEAN_RGB) * SCALE."""
    check_image_file(path)
    try:
        image = mx.image.imread(path)  # RGB, HWC, uint8
    except mx.base.MXNetError:
        raise UndecodableImage(_not_an_image(path)) from None
    image = mx.image.resize_short(image, resize or image_size, interp=BICUBIC)
    image, _ = mx.image.center_crop(image, (image_size, image_size))
    normalised = (image.astype("float32") - mx.nd.array(MEAN_RGB)) * SCALE
    return normalised.transpose((2, 0, 1)).expand_dims(0)

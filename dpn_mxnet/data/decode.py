"""A record's image decoded as OpenCV decodes it, plain JPEGs by libjpeg-turbo (simplejpeg), which is faster."""
import cv2
import numpy as np
import simplejpeg

_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1


def exif_free_jpeg(encoded):
    """Whether ``encoded`` is a JPEG without an Exif segment (OpenCV would apply an Exif orientation)."""
    if encoded[:2] != b"\xff\xd8":
        return False
    position = 2
    while position + 4 <= len(encoded) and encoded[position] == 0xFF:
        marker = encoded[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (_SOS, _EOI):
            return True
        if marker == _APP1 and encoded[position + 4:position + 10] == b"Exif\x00\x00":
            return False
        position += 2 + (encoded[position + 2] << 8 | encoded[position + 3])
    return False


def decode_bgr(encoded, plain_jpeg=None):
    """A record's image as 3-channel BGR uint8 equal to ``cv2.imdecode(..., IMREAD_COLOR)``: libjpeg-turbo through
    simplejpeg for plain JPEGs (colour or greyscale, no Exif), OpenCV for the rest (Exif, CMYK, PNG, damaged
    data). None if neither can decode it. ``plain_jpeg``: whether ``encoded`` is a JPEG without Exif, where the
    caller has found out already."""
    if exif_free_jpeg(encoded) if plain_jpeg is None else plain_jpeg:
        try:
            return simplejpeg.decode_jpeg(encoded, colorspace="BGR")
        except ValueError:  # CMYK/YCCK, or data that libjpeg-turbo calls damaged
            pass
    return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)


def jpeg_shape(encoded):
    """(rows, cols) of a plain JPEG (one ``decode_bgr`` hands to libjpeg-turbo) read from its header, None for the
    rest or an unreadable header."""
    if not exif_free_jpeg(encoded):
        return None
    try:
        rows, cols = simplejpeg.decode_jpeg_header(encoded)[:2]
    except ValueError:
        return None
    return rows, cols

"""The first bytes of the image formats that OpenCV decodes: how a record or a file is told to hold an image
without decoding it."""
import re

# The first bytes of the image formats that OpenCV decodes (and im2rec or OpenCV write): (offset, bytes).
_IMAGE_SIGNATURES = (
    (0, b"\xff\xd8\xff"),                                    # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),                               # PNG
    (0, b"BM"),                                              # BMP
    (0, b"II*\x00"), (0, b"MM\x00*"),                        # TIFF
    (8, b"WEBP"),                                            # WebP (in a RIFF container)
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n"), (0, b"\xffO\xffQ"),  # JPEG 2000 file, codestream
    (0, b"\x59\xa6\x6a\x95"),                                # Sun raster
    (0, b"\x76\x2f\x31\x01"),                                # OpenEXR
    (0, b"#?RADIANCE"), (0, b"#?RGBE"),                      # Radiance HDR
    (0, b"PF\n"), (0, b"Pf\n"),                              # PFM
)
_PNM_SIGNATURE = re.compile(rb"P[1-7]\s")                    # PBM, PGM, PPM, PAM
SIGNATURE_BYTES = 12


def is_image_signature(head):
    """Whether the first bytes of an encoded image belong to a format OpenCV decodes."""
    return (any(head[at:at + len(magic)] == magic for at, magic in _IMAGE_SIGNATURES)
            or bool(_PNM_SIGNATURE.match(head)))


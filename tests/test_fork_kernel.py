"""The aug="fork" pixel kernel (dpn_mxnet/data/kernel.py) against OpenCV: both HLS conversions on every input they can
get (all 16.7 M BGR colours, all 181 x 256 x 256 HLS triples), and the fused jitter + mirror + normalisation on
every colour for a set of offsets that includes the clamped extremes, against kernel.hsl_jitter (cv2.cvtColor)
followed by cv2.flip and the normalisation written out in numpy."""
import pathlib

import cv2
import numpy as np
import pytest

from dpn_mxnet import data
from dpn_mxnet.data import kernel

WIDTH = 4096  # 4096 x 4096 pixels hold every 8-bit BGR colour once
OFFSETS = [(0, 0, 0), (20, 40, 50), (-20, -40, -50), (7, -13, 29), (180, 255, 255), (-180, -255, -255),
           (-3, 255, -255)]


def every_colour():
    value = np.arange(1 << 24, dtype=np.uint32)
    return np.stack([value & 255, (value >> 8) & 255, value >> 16], axis=1).astype(np.uint8).reshape(-1, WIDTH, 3)


def every_hls_triple():
    """Every (H, L, S) that cvtColor's 8-bit HLS holds: H in 0..180, L and S in 0..255."""
    hue, light, sat = np.meshgrid(np.arange(181), np.arange(256), np.arange(256), indexing="ij")
    return np.stack([hue, light, sat], axis=-1).astype(np.uint8).reshape(-1, WIDTH, 3)


def cpu_flags():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo lists no flags")


def test_the_kernel_is_used_exactly_where_the_cpu_has_avx2_and_fma():
    flags = cpu_flags()
    assert kernel.exact_here() == ({"avx2", "fma"} <= flags)
    if kernel.exact_here():
        assert kernel.exact_for(224) and kernel.exact_for(64)
    assert not kernel.exact_for(60), "a row whose last pixels take OpenCV's scalar code goes to cv2.cvtColor"


@pytest.fixture
def exact():
    if not kernel.exact_here():
        pytest.skip("OpenCV does not run its AVX2 + FMA3 HLS code on this CPU, so the pipeline uses cv2.cvtColor")


def test_bgr_to_hls_matches_opencv_on_every_colour(exact):
    colours = every_colour()
    np.testing.assert_array_equal(kernel.convert(colours, to_bgr=False),
                                  cv2.cvtColor(colours, cv2.COLOR_BGR2HLS))


def test_hls_to_bgr_matches_opencv_on_every_hls_triple(exact):
    triples = every_hls_triple()
    np.testing.assert_array_equal(kernel.convert(triples, to_hls=False), cv2.cvtColor(triples, cv2.COLOR_HLS2BGR))


def reference(bgr, offsets, mirror):
    """The fork's pixels, written out: kernel.hsl_jitter, cv2.flip, RGB planes (x - MEAN_RGB) * SCALE in float32."""
    if offsets is not None:
        bgr = kernel.hsl_jitter(bgr, offsets)
    if mirror:
        bgr = cv2.flip(bgr, 1)
    rgb = bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    return (rgb - np.float32(data.MEAN_RGB).reshape(3, 1, 1)) * np.float32(data.SCALE)


@pytest.mark.parametrize("offsets", OFFSETS)
def test_jitter_mirror_and_normalisation_equal_opencv_on_every_colour(offsets):
    colours, mirror = every_colour(), sum(offsets) % 2 == 1
    rows = 512
    out = np.empty((3, rows, WIDTH), np.float32)
    scratch = kernel.Scratch(rows, WIDTH)
    for top in range(0, len(colours), rows):
        chunk = colours[top:top + rows]
        kernel.augment_into(chunk, offsets, mirror, out, scratch)
        np.testing.assert_array_equal(out, reference(chunk, offsets, mirror), "rows %d.." % top)


@pytest.mark.parametrize("width", [64, 60])
def test_photograph_crops_equal_opencv_with_and_without_jitter(width):
    """A real photograph at a width the kernel handles (64) and at one that goes to cv2.cvtColor (60)."""
    from datasets import photo
    bgr = np.asarray(photo("coffee.png"))[:, :, ::-1]
    crop = cv2.resize(bgr, (width, 48), interpolation=cv2.INTER_CUBIC)
    out = np.empty((3, 48, width), np.float32)
    scratch = kernel.Scratch(48, width)
    for offsets in (None, (13, -27, 41)):
        for mirror in (False, True):
            kernel.augment_into(crop, offsets, mirror, out, scratch)
            np.testing.assert_array_equal(out, reference(crop, offsets, mirror))

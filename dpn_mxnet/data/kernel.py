"""The pixel work of one ``aug="fork"`` sample once its draws are made: its crop window resized (bicubic), the mirror
(``cv2.flip``), then, compiled with numba, the authors' HSL jitter (OpenCV's 8-bit BGR -> HLS, offsets added and
clamped, HLS -> BGR) and the normalisation, written straight into the sample's row of a float32 NCHW batch.

The HLS conversions repeat, operation by operation in float32, the AVX2 code of OpenCV 4.x's ``cv2.cvtColor``
(``color_hsv.simd.hpp``), including its fused multiply-add in the hue, so both match ``cv2.cvtColor`` bit for bit
(tests/test_fork_kernel.py checks all 16.7 M colours and all HLS triples). That holds only where this process's
OpenCV runs that code: ``exact_for(width)`` says whether it does for rows of ``width`` pixels; elsewhere
``augment_into`` does the jitter with ``cv2.cvtColor`` (``hsl_jitter``) and the rest here.
"""
import functools

import cv2
import llvmlite.binding
import numba
import numpy as np
from numba.extending import intrinsic

from .pixels import MEAN_RGB, SCALE

F = np.float32
_INV255 = F(1) / F(255)
_HUE_SCALE = F(6) / F(180)  # HLS2RGB's hscale for the 8-bit range 0..180
_SIXTH = F(1) / F(6)
_EPS = F(np.finfo(np.float32).eps)  # FLT_EPSILON
_ROUND = F(1 << 23)  # (x + 2**23) - 2**23 rounds 0 <= x < 2**22 to the nearest integer, ties to even (cvRound)
_MEAN = tuple(F(m) for m in MEAN_RGB)
_SCALE = F(SCALE)
_CV_CPU_AVX2, _CV_CPU_FMA3 = 11, 12  # OpenCV's CpuFeatures ids
_SIMD_LANES = 8  # float32 lanes of OpenCV's AVX2 code; a row's last width % 8 pixels take its scalar code


def hsl_jitter(bgr, offsets):
    """Add offsets (dH, dS, dL) to a BGR uint8 image in OpenCV's HLS space, clamping H to [0, 180] and S, L to
    [0, 255]: what ImageRecordIter's random_h/s/l and the fork's aug_torch (the same C++) do with their offsets."""
    d_h, d_s, d_l = offsets
    values = np.arange(256)
    table = np.stack([np.clip(values + d_h, 0, 180), np.clip(values + d_l, 0, 255), np.clip(values + d_s, 0, 255)],
                     axis=1).astype(np.uint8).reshape(1, 256, 3)
    return cv2.cvtColor(cv2.LUT(cv2.cvtColor(bgr, cv2.COLOR_BGR2HLS), table), cv2.COLOR_HLS2BGR)


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma.f32), as OpenCV's v_muladd with FMA3."""
    signature = numba.types.float32(numba.types.float32, numba.types.float32, numba.types.float32)
    return signature, lambda context, builder, sig, args: builder.fma(*args)


@functools.lru_cache(maxsize=None)
def exact_here():
    """Whether OpenCV's cvtColor runs its AVX2 + FMA3 code in this process (dispatched, supported by the CPU and
    not switched off by cv2.setUseOptimized) and numba compiles fused multiply-adds to the CPU's own instruction."""
    dispatched = "*AVX2" in cv2.getCPUFeaturesLine().replace("*AVX2?", "")
    supported = cv2.checkHardwareSupport(_CV_CPU_AVX2) and cv2.checkHardwareSupport(_CV_CPU_FMA3)
    return bool(dispatched and supported and cv2.useOptimized()
                and llvmlite.binding.get_host_cpu_features().get("fma", False))


def exact_for(width):
    """Whether the compiled HLS conversions equal ``cv2.cvtColor`` on images ``width`` pixels wide here."""
    return width % _SIMD_LANES == 0 and exact_here()


@numba.njit(inline="always")
def _hls_row(b_row, g_row, r_row, d_h, d_s, d_l, cols):
    """BGR (0..255 as float32) -> OpenCV 8-bit HLS in place (H in b_row, L in g_row, S in r_row), with the offsets
    added and clamped as ``hsl_jitter``'s table does."""
    for x in range(cols):
        b, g, r = b_row[x] * _INV255, g_row[x] * _INV255, r_row[x] * _INV255
        high = max(max(r, g), b)
        low = min(min(r, g), b)
        diff, total = high - low, high + low
        light = total * F(0.5)
        divisor = F(2) - total
        divisor = total if light < F(0.5) else divisor
        sat = diff / divisor
        hue = r - g
        hue = (b - r) if high == g else hue
        hue = (g - b) if high == r else hue
        start = F(240)
        start = F(120) if high == g else start
        wrap = F(0)
        wrap = F(360) if g < b else wrap
        start = wrap if high == r else start
        hue = _fma(hue, F(60) / diff, start) * F(0.5)
        hue = (hue + _ROUND) - _ROUND
        hue = hue if diff > _EPS else F(0)
        sat = (sat * F(255) + _ROUND) - _ROUND
        sat = sat if diff > _EPS else F(0)
        light = (light * F(255) + _ROUND) - _ROUND
        b_row[x] = min(max(min(hue, F(255)) + d_h, F(0)), F(180))
        g_row[x] = min(max(min(light, F(255)) + d_l, F(0)), F(255))
        r_row[x] = min(max(min(sat, F(255)) + d_s, F(0)), F(255))


@numba.njit(inline="always")
def _bgr_row(h_row, l_row, s_row, cols):
    """OpenCV 8-bit HLS (H 0..180, L, S 0..255 as float32, in the three rows) -> BGR 0..255 in place."""
    for x in range(cols):
        light, sat = l_row[x] * _INV255, s_row[x] * _INV255
        product = light * sat
        spread = sat - product
        spread = product if light <= F(0.5) else spread
        hue = h_row[x] * _HUE_SCALE
        whole = (hue + _ROUND) - _ROUND
        whole = whole - F(1) if whole > hue else whole  # trunc
        sixth = hue * _SIXTH
        turns = (sixth + _ROUND) - _ROUND
        turns = turns - F(1) if turns > sixth else turns
        sector = whole - F(6) * turns
        twice = (hue - whole) + (hue - whole)
        top, bottom = light + spread, light - spread
        falling, rising = _fma(-spread, twice, top), _fma(spread, twice, bottom)
        b = top if sector <= F(4) else falling
        b = rising if sector <= F(2) else b
        b = bottom if sector < F(2) else b
        g = falling if sector < F(4) else bottom
        g = top if sector <= F(2) else g
        g = rising if sector < F(1) else g
        r = rising if sector <= F(4) else top
        r = bottom if sector < F(4) else r
        r = falling if sector < F(2) else r
        r = top if sector < F(1) else r
        h_row[x] = min(max((b * F(255) + _ROUND) - _ROUND, F(0)), F(255))
        l_row[x] = min(max((g * F(255) + _ROUND) - _ROUND, F(0)), F(255))
        s_row[x] = min(max((r * F(255) + _ROUND) - _ROUND, F(0)), F(255))


@numba.njit(inline="always")
def _load(plane_row, row, cols):
    for x in range(cols):
        row[x] = plane_row[x]


@numba.njit(inline="always")
def _store(row, mean, out_row, cols):
    for x in range(cols):
        out_row[x] = (row[x] - mean) * _SCALE


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _augment(blue, green, red, d_h, d_s, d_l, jitter, out, rows_buffer):
    """Channel planes (S, S') uint8 -> out (3, S, S') float32 RGB, (x - MEAN_RGB) * SCALE, jittered.
    Every loop reads one array and writes one (the HLS rows: three in place), so LLVM vectorises each."""
    rows, cols = blue.shape
    b_row, g_row, r_row = rows_buffer[0], rows_buffer[1], rows_buffer[2]
    for y in range(rows):
        _load(blue[y], b_row, cols)
        _load(green[y], g_row, cols)
        _load(red[y], r_row, cols)
        if jitter:
            _hls_row(b_row, g_row, r_row, d_h, d_s, d_l, cols)
            _bgr_row(b_row, g_row, r_row, cols)
        _store(r_row, _MEAN[0], out[0, y], cols)
        _store(g_row, _MEAN[1], out[1, y], cols)
        _store(b_row, _MEAN[2], out[2, y], cols)


class Scratch:
    """One thread's working memory for ``sample_into`` and ``augment_into`` on S x S' crops."""

    def __init__(self, rows, cols):
        self.crop = np.empty((rows, cols, 3), np.uint8)
        self.mirrored = np.empty((rows, cols, 3), np.uint8)
        self.planes = [np.empty((rows, cols), np.uint8) for _ in range(3)]
        self.rows = np.empty((3, cols), np.float32)


def augment_into(crop, offsets, mirror, out, scratch):
    """Write ``crop`` (uint8 BGR, H x W x 3) into ``out`` (float32 3 x H x W) as the fork does: HSL ``offsets``
    (dH, dS, dL; None for no jitter), then the mirror, then RGB (x - MEAN_RGB) * SCALE. ``scratch`` is a
    ``Scratch(H, W)`` owned by the calling thread."""
    jitter = offsets is not None
    if jitter and not exact_for(crop.shape[1]):
        crop, jitter = hsl_jitter(crop, offsets), False
    d_h, d_s, d_l = offsets if jitter else (0, 0, 0)
    if mirror:  # the jitter acts on each pixel alone, so mirroring first changes nothing
        crop = cv2.flip(crop, 1, dst=scratch.mirrored if scratch.mirrored.shape == crop.shape else None)
    planes = cv2.split(crop, scratch.planes)  # into the scratch planes where their shape fits
    _augment(*planes, F(d_h), F(d_s), F(d_l), jitter, out, scratch.rows)


def sample_into(image, draws, out, scratch):
    """Write one sample of ``image`` (uint8 BGR) into ``out`` (float32 3 x S x S'): the window of its ``draws``
    ((left, top, width, height), offsets, mirror) resized (bicubic) to S x S', then ``augment_into``. ``scratch``
    is a ``Scratch(S, S')`` owned by the calling thread."""
    (left, top, width, height), offsets, mirror = draws
    rows, cols = scratch.crop.shape[:2]
    cv2.resize(image[top:top + height, left:left + width], (cols, rows), dst=scratch.crop,
               interpolation=cv2.INTER_CUBIC)
    augment_into(scratch.crop, offsets, mirror, out, scratch)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _convert(image, offsets, to_hls, to_bgr, rows_buffer):
    rows, cols = image.shape[0], image.shape[1]
    out = np.empty_like(image)
    a_row, b_row, c_row = rows_buffer[0], rows_buffer[1], rows_buffer[2]
    for y in range(rows):
        for x in range(cols):
            a_row[x], b_row[x], c_row[x] = image[y, x, 0], image[y, x, 1], image[y, x, 2]
        if to_hls:
            _hls_row(a_row, b_row, c_row, offsets[0], offsets[1], offsets[2], cols)
        if to_bgr:
            _bgr_row(a_row, b_row, c_row, cols)
        for x in range(cols):
            out[y, x, 0], out[y, x, 1], out[y, x, 2] = a_row[x], b_row[x], c_row[x]
    return out


def convert(image, to_hls=True, to_bgr=True, offsets=(0, 0, 0)):
    """The kernel's conversions on a uint8 H x W x 3 image, for checking them against ``cv2.cvtColor``: BGR ->
    HLS (+ offsets (dH, dS, dL), clamped) with ``to_hls``, HLS -> BGR with ``to_bgr``."""
    rows_buffer = np.empty((3, image.shape[1]), np.float32)
    return _convert(image, np.array(offsets, np.float32), to_hls, to_bgr, rows_buffer)

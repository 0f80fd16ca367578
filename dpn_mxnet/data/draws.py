"""The random draws of the authors' augmentation (aug="fork"): the key of a pass, the order in which a pass visits
its records, and each sample's draws, compiled with numba. Sample ``position`` of the pass ``key`` (``pass_key``)
draws from numpy's ``np.random.default_rng([*key, position])`` (SeedSequence, PCG64, Generator), repeated here
operation by operation so that ``random``, ``uniform`` and ``integers`` give the same numbers; the draws are those
that ``spec.Augmentation`` describes. tools/dev/fork_reference.py holds the plain Python version they equal.

One call makes the draws of a whole batch, which is what makes them cheap.
"""
import math

import numba
import numpy as np

_M32 = 0xFFFFFFFF
_HASH_A, _MULT_A, _HASH_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED  # numpy's SeedSequence
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_HIGH, _PCG_LOW = 0x2360ED051FC65DA4, 0x4385DF649FCCF645  # PCG64's 128-bit LCG multiplier
_U = np.uint64


def pass_key(seed, part, epoch, repeat=0):
    """The entropy of one pass over a part: the seed, the part (a worker's rank), the epoch and, for a part that
    an epoch runs through more than once, the repeat."""
    return (seed, part, epoch, repeat)


def pass_order(keys, key):
    """The shuffled order of ``keys`` in the pass ``key`` (``pass_key``)."""
    return np.random.default_rng(key).permutation(keys).tolist()


@numba.njit(cache=True)
def _seed_words(entropy):
    """numpy's SeedSequence(entropy).generate_state(8, uint32) for a pool of 4 words (NumPy 1.17+)."""
    pool = np.zeros(4, np.uint64)
    hash_const = _U(_HASH_A)
    for i in range(4):
        value = (entropy[i] if i < len(entropy) else _U(0)) ^ hash_const
        hash_const = (hash_const * _U(_MULT_A)) & _U(_M32)
        value = (value * hash_const) & _U(_M32)
        pool[i] = value ^ (value >> _U(16))
    for source in range(4 + max(0, len(entropy) - 4)):
        for target in range(4):
            if source < 4 and source == target:
                continue
            value = (pool[source] if source < 4 else entropy[source]) ^ hash_const
            hash_const = (hash_const * _U(_MULT_A)) & _U(_M32)
            value = (value * hash_const) & _U(_M32)
            value ^= value >> _U(16)
            mixed = (_U(_MIX_L) * pool[target] - _U(_MIX_R) * value) & _U(_M32)
            pool[target] = mixed ^ (mixed >> _U(16))
    words = np.zeros(8, np.uint64)
    hash_const = _U(_HASH_B)
    for i in range(8):
        value = pool[i % 4] ^ hash_const
        hash_const = (hash_const * _U(_MULT_B)) & _U(_M32)
        value = (value * hash_const) & _U(_M32)
        words[i] = value ^ (value >> _U(16))
    return words


@numba.njit(inline="always")
def _high_product(x, y):
    """The upper 64 bits of the 128-bit product of two uint64."""
    x0, x1, y0, y1 = x & _U(_M32), x >> _U(32), y & _U(_M32), y >> _U(32)
    low, cross_a, cross_b = x0 * y0, x0 * y1, x1 * y0
    middle = (low >> _U(32)) + (cross_a & _U(_M32)) + (cross_b & _U(_M32))
    return x1 * y1 + (cross_a >> _U(32)) + (cross_b >> _U(32)) + (middle >> _U(32))


@numba.njit(inline="always")
def _step(pcg):
    """PCG64's LCG step, state = state * multiplier + increment (mod 2**128), on pcg = [state hi, state lo, inc hi,
    inc lo, has_uint32, uinteger]."""
    high, low = pcg[0], pcg[1]
    product_low = low * _U(_PCG_LOW)
    product_high = _high_product(low, _U(_PCG_LOW)) + low * _U(_PCG_HIGH) + high * _U(_PCG_LOW)
    new_low = product_low + pcg[3]
    pcg[0] = product_high + pcg[2] + (_U(1) if new_low < product_low else _U(0))
    pcg[1] = new_low


@numba.njit(inline="always")
def _next64(pcg):
    """PCG64's 64-bit output (XSL-RR of the stepped state)."""
    _step(pcg)
    mixed, rotation = pcg[0] ^ pcg[1], pcg[0] >> _U(58)
    return (mixed >> rotation) | (mixed << ((_U(64) - rotation) & _U(63)))


@numba.njit(inline="always")
def _next32(pcg):
    """PCG64's 32-bit output: the low half of a 64-bit one, its high half kept for the next call."""
    if pcg[4]:
        pcg[4] = _U(0)
        return pcg[5]
    value = _next64(pcg)
    pcg[4], pcg[5] = _U(1), value >> _U(32)
    return value & _U(_M32)


@numba.njit(inline="always")
def _random(pcg):
    """Generator.random(): 53 random bits as a float64 in [0, 1)."""
    return float(_next64(pcg) >> _U(11)) * (1.0 / 9007199254740992.0)


@numba.njit(inline="always")
def _integer(pcg, high):
    """Generator.integers(0, high, endpoint=True) for 0 <= high < 2**32 - 1 (Lemire's method on 32-bit draws)."""
    if high == 0:
        return 0
    bound = _U(high) + _U(1)
    product = _next32(pcg) * bound
    leftover = product & _U(_M32)
    if leftover < bound:
        threshold = (_U(_M32) - _U(high)) % bound
        while leftover < threshold:
            product = _next32(pcg) * bound
            leftover = product & _U(_M32)
    return int(product >> _U(32))


@numba.njit(inline="always")
def _seed(pcg, entropy):
    """pcg in the state of PCG64(SeedSequence(entropy))."""
    words = _seed_words(entropy)
    init_high, init_low = words[0] | words[1] << _U(32), words[2] | words[3] << _U(32)
    stream_high, stream_low = words[4] | words[5] << _U(32), words[6] | words[7] << _U(32)
    pcg[2] = (stream_high << _U(1)) | (stream_low >> _U(63))
    pcg[3] = (stream_low << _U(1)) | _U(1)
    pcg[0], pcg[1] = _U(0), _U(0)
    _step(pcg)
    low = pcg[1] + init_low
    pcg[0] = pcg[0] + init_high + (_U(1) if low < init_low else _U(0))
    pcg[1] = low
    _step(pcg)
    pcg[4], pcg[5] = _U(0), _U(0)


@numba.njit(cache=True)
def _draws(entropy, lengths, shapes, size, area, aspect, hsl, mirror, windows, offsets, mirrors):
    """Sample i's draws into windows[i] (left, top, width, height), offsets[i] and mirrors[i], in
    ``spec.Augmentation``'s order: aspect (two numbers), swap, area, left, top, HSL (two each), mirror."""
    pcg = np.zeros(6, np.uint64)
    lo, hi = aspect[0], aspect[1]
    for i in range(len(lengths)):
        _seed(pcg, entropy[i, :lengths[i]])
        rows, cols = shapes[i, 0], shapes[i, 1]
        first = _random(pcg)
        ratio = lo + (hi - lo) * (first + _random(pcg)) / 2
        if _random(pcg) > 0.5:
            w_ratio, h_ratio = ratio, 1 / ratio
        else:
            w_ratio, h_ratio = 1 / ratio, ratio
        stretched_w, stretched_h = cols, rows
        if lo != 1 or hi != 1:
            stretched_w, stretched_h = math.ceil(cols * w_ratio * 1.1), math.ceil(rows * h_ratio * 1.1)
        scale = max((size + 0.4) / stretched_h, (size + 0.4) / stretched_w)
        if area[0] != 1 or area[1] != 1:
            scale /= math.sqrt(area[0] + (area[1] - area[0]) * _random(pcg))
        for axis in range(2):
            length, extent = (cols, stretched_w) if axis == 0 else (rows, stretched_h)
            start = _integer(pcg, int(scale * extent) - size)
            zoom = scale * extent / length
            crop = min(length, max(1, int(np.rint(size / zoom))))
            windows[i, axis] = min(length - crop, max(0, int(np.rint((start + (scale - 1) / 2) / zoom))))
            windows[i, 2 + axis] = crop
        if hsl[0] != 0 or hsl[1] != 0 or hsl[2] != 0:
            for channel in range(3):
                first = _random(pcg)
                offsets[i, channel] = int((first + 4 * _random(pcg)) / 5 * 2 * hsl[channel] - hsl[channel])
        mirrors[i] = mirror and _random(pcg) < 0.5


def _entropy(key, positions):
    """The uint32 words numpy's SeedSequence takes from [*key, position] for each position, one row each (padded),
    and the number of words of each row."""
    def words(value):
        found = [value & _M32]
        value >>= 32
        while value:
            found.append(value & _M32)
            value >>= 32
        return found
    common = [word for value in key for word in words(value)]
    rows = [common + words(position) for position in positions]
    lengths = np.array([len(row) for row in rows], np.int64)
    entropy = np.zeros((len(rows), lengths.max()), np.uint64)
    for i, row in enumerate(rows):
        entropy[i, :len(row)] = row
    return entropy, lengths


def sample_draws(augmentation, key, positions, shapes):
    """The draws of sample ``position`` of the pass ``key`` for each of ``positions``, made from
    ``np.random.default_rng([*key, position])`` for an image of the matching (rows, cols) of ``shapes``:
    ((left, top, width, height), [dH, dS, dL] or None for no jitter, mirror) per sample."""
    count = len(positions)
    if not count:
        return []
    windows, offsets, mirrors = np.zeros((count, 4), np.int64), np.zeros((count, 3), np.int64), np.zeros(count, bool)
    _draws(*_entropy(key, positions), np.array(shapes, np.int64).reshape(count, 2), augmentation.image_size,
           np.array((augmentation.min_area, augmentation.max_area), np.float64),
           np.array(augmentation.aspect, np.float64), np.array(augmentation.hsl, np.int64), bool(augmentation.mirror),
           windows, offsets, mirrors)
    jitter = any(augmentation.hsl)
    return [(tuple(window), list(offset) if jitter else None, bool(mirror))
            for window, offset, mirror in zip(windows.tolist(), offsets.tolist(), mirrors.tolist())]

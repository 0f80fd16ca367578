"""The training augmentation, measured over many draws.

Geometry: a 256x192 PNG whose red channel is the column number and green the row number (blue: a real photograph)
is packed 40 times; each output crop's source window is recovered by fitting the red and green ramps (bicubic
resampling keeps linear ramps linear), and the distributions of area, aspect, position and mirroring are compared
with an independent simulation of the documented sampling. Colour: a 64x64 photograph with an identity crop, so
each output is the photograph with one HSL offset, which is recovered and checked against the bounds."""
import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from dpn_mxnet.packing import pack_split
from dpn_mxnet import data
from dpn_mxnet.data import kernel, spec, training

from datasets import photo

W, H = 256, 192
MEAN = np.float32(data.MEAN_RGB).reshape(1, 3, 1, 1)
DRAWS = 400


def pack_copies(folder, out, name, image, copies=40):
    image.save(folder / name)
    return pack_split(name.split(".")[0], folder, [(name, 0)] * copies, out, 1, threads=2)


@pytest.fixture(scope="module")
def coordinate_rec(tmp_path_factory):
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, :, 0] = np.arange(W)[None, :]
    pixels[:, :, 1] = np.arange(H)[:, None]
    pixels[:, :, 2] = np.asarray(photo("astronaut.png").convert("L").resize((W, H)))
    return pack_copies(tmp_path_factory.mktemp("coord"), tmp_path_factory.mktemp("coord_rec"), "coord.png",
                       Image.fromarray(pixels))


@pytest.fixture(scope="module")
def colour_rec(tmp_path_factory):
    return pack_copies(tmp_path_factory.mktemp("colour"), tmp_path_factory.mktemp("colour_rec"), "colour.png",
                       photo("astronaut.png").resize((64, 64), Image.BICUBIC))


def draw(rec, size, count=DRAWS, **options):
    """``count`` augmented, normalised images (N, 3, S, S): one batch of 40 from each of count / 40 epochs (with
    ``seed_aug``, ImageRecordIter repeats its draws per slot in every batch of a pass, so the batches of one epoch
    of 40 copies of one image are all the same)."""
    batches = training.train_iter(rec, 40, size, threads=1, batches_per_epoch=1, **options)
    images = []
    for epoch in range(count // 40):
        batches.start_epoch(epoch)
        images += [batch.data[0].asnumpy() for batch in batches]
    return np.concatenate(images)


def rgb(images):
    """Normalised images back in 0..255 RGB."""
    return images / data.SCALE + MEAN


def windows(images):
    """Source window (left, top, width, height) of each crop and whether it is mirrored."""
    size = images.shape[-1]
    inner = slice(size // 10, size - size // 10)
    centres = np.arange(size)[inner] + 0.5
    found = []
    for image in images:
        slope_x, offset_x = np.polyfit(centres, image[0, inner, inner].mean(axis=0), 1)
        slope_y, offset_y = np.polyfit(centres, image[1, inner, inner].mean(axis=1), 1)
        width, height = abs(slope_x) * size, slope_y * size
        left = offset_x + 0.5 - (width if slope_x < 0 else 0)  # value = column index = position - 0.5
        found.append((left, offset_y + 0.5, width, height, slope_x < 0))
    return np.array(found, dtype=float).T


def simulate_stock(count, size, rng):
    """ImageRecordIter's random resized crop on a W x H image: (width, height) of each crop."""
    boxes = []
    for _ in range(count):
        for _ in range(10):
            area, ratio = rng.uniform(0.08, 1) * W * H, rng.uniform(3 / 4, 4 / 3)
            height, width = round(np.sqrt(area / ratio)), round(np.sqrt(area * ratio))
            if rng.random() > 0.5:
                width, height = height, width
            if width <= W and height <= H:
                boxes.append((width, height))
                break
        else:  # centre crop of the image scaled to at least size x size
            zoom = max(1, size / H, size / W)
            boxes.append((size / zoom, size / zoom))
    return np.array(boxes, dtype=float).T


def simulate_fork(count, size, rng):
    """The fork's aug_torch on a W x H image: (width, height) in the original image of each crop."""
    boxes = []
    for _ in range(count):
        ratio = 3 / 4 + (4 / 3 - 3 / 4) * (rng.random() + rng.random()) / 2
        w_ratio, h_ratio = (ratio, 1 / ratio) if rng.random() > 0.5 else (1 / ratio, ratio)
        stretched_w, stretched_h = np.ceil(W * w_ratio * 1.1), np.ceil(H * h_ratio * 1.1)
        scale = max((size + 0.4) / stretched_h, (size + 0.4) / stretched_w) / np.sqrt(rng.uniform(0.08, 1))
        boxes.append((size * W / (scale * stretched_w), size * H / (scale * stretched_h)))
    return np.array(boxes).T


def assert_inside(left, top, width, height):
    assert (left > -0.6).all() and (top > -0.6).all(), "crops start inside the image"
    assert (left + width < W + 0.6).all() and (top + height < H + 0.6).all(), "crops end inside the image"


def assert_same_distribution(measured, simulated, what):
    result = stats.ks_2samp(measured, simulated)
    assert result.pvalue > 1e-3, "%s: measured and simulated distributions differ (KS p = %.2g)" % (what, result.pvalue)


@pytest.mark.parametrize("size", [224, 32])
def test_stock_random_resized_crop(coordinate_rec, size):
    left, top, width, height, mirrored = windows(rgb(draw(coordinate_rec, size, hsl=(0, 0, 0))))
    area, aspect = width * height / (W * H), width / height
    assert area.min() > 0.08 * 0.96 and area.max() < 1.01
    assert aspect.min() > 0.75 * 0.97 and aspect.max() < 4 / 3 * 1.03
    assert np.histogram(area, bins=[0.08, 0.3, 0.55, 0.8, 1.01])[0].min() > 0.05 * DRAWS  # spread over the range
    assert_inside(left, top, width, height)
    room = W - width > 20
    position = left[room] / (W - width[room])
    assert position.min() < 0.1 and position.max() > 0.9 and abs(position.mean() - 0.5) < 0.06
    assert abs(mirrored.mean() - 0.5) < 0.1
    sim_width, sim_height = simulate_stock(20000, size, np.random.default_rng(0))
    assert_same_distribution(area, sim_width * sim_height / (W * H), "crop area")
    assert_same_distribution(np.log(aspect), np.log(sim_width / sim_height), "crop aspect")


def test_fork_crop_geometry(coordinate_rec):
    left, top, width, height, mirrored = windows(rgb(draw(coordinate_rec, 224, hsl=(0, 0, 0), aug="fork")))
    aspect = width / height
    assert aspect.min() > (3 / 4) ** 2 * 0.97 and aspect.max() < (4 / 3) ** 2 * 1.03  # r^2 in the original image
    assert_inside(left, top, width, height)
    assert abs(mirrored.mean() - 0.5) < 0.1
    sim_width, sim_height = simulate_fork(20000, 224, np.random.default_rng(0))
    assert_same_distribution(width * height / (W * H), sim_width * sim_height / (W * H), "crop area")
    assert_same_distribution(np.log(aspect), np.log(sim_width / sim_height), "crop aspect")


def shifted_hls(bgr, offsets):
    """Reference written here: (dH, dS, dL) added to the hue, saturation and lightness planes of OpenCV's 8-bit HLS
    (plane order H, L, S; H in 0..180, L and S in 0..255, clamped), back to BGR."""
    d_h, d_s, d_l = offsets
    hls = cv2.cvtColor(bgr, cv2.COLOR_BGR2HLS).astype(int)
    hue, lightness, saturation = hls[..., 0], hls[..., 1], hls[..., 2]
    shifted = np.stack([np.clip(hue + d_h, 0, 180), np.clip(lightness + d_l, 0, 255),
                        np.clip(saturation + d_s, 0, 255)], axis=-1)
    return cv2.cvtColor(shifted.astype(np.uint8), cv2.COLOR_HLS2BGR)


@pytest.mark.parametrize("offsets", [(0, 0, 0), (20, 0, 0), (0, 40, 0), (0, 0, 50), (-20, -40, -50), (13, -7, 29),
                                     (200, 300, -300)])
def test_hsl_jitter_shifts_hue_saturation_and_lightness(offsets):
    """``kernel.hsl_jitter`` (the fork pipeline's colour step) against the reference above, clamping included."""
    bgr = np.asarray(photo("astronaut.png").resize((64, 64), Image.BICUBIC))[:, :, ::-1].copy()
    expected = shifted_hls(bgr, offsets)
    np.testing.assert_array_equal(kernel.hsl_jitter(bgr, offsets), expected)
    if any(offsets):
        assert np.abs(expected.astype(int) - bgr).max() > 10  # the shift shows


def hls_offsets(reference_bgr, output_bgr):
    """The (dH, dS, dL) that ``shifted_hls`` needs to turn the reference into the output, checked exactly."""
    ref = cv2.cvtColor(reference_bgr, cv2.COLOR_BGR2HLS).astype(int)
    out = cv2.cvtColor(output_bgr, cv2.COLOR_BGR2HLS).astype(int)
    mid = (ref[..., 1] > 60) & (ref[..., 1] < 190) & (ref[..., 2] > 60) & (ref[..., 2] < 190)
    hue = mid & (ref[..., 0] > 25) & (ref[..., 0] < 155)
    guess = [int(np.median((out - ref)[..., k][mask])) for k, mask in ((0, hue), (2, mid), (1, mid))]
    near = (0, -1, 1, -2, 2)
    candidates = [(guess[0] + a, guess[1] + b, guess[2] + c) for a in near for b in near for c in near]
    errors = [np.abs(shifted_hls(reference_bgr, c).astype(int) - output_bgr).max() for c in candidates]
    best = int(np.argmin(errors))
    return candidates[best], errors[best]


def test_stock_hsl_jitter_is_bounded_and_matches_its_definition(colour_rec):
    reference = np.asarray(photo("astronaut.png").resize((64, 64), Image.BICUBIC))
    plain = draw(colour_rec, 64, 80, min_area=1, max_area=1, aspect=(1, 1), mirror=False, hsl=(0, 0, 0))
    normalised = (reference.transpose(2, 0, 1).astype(np.float32) - MEAN[0]) * np.float32(data.SCALE)
    np.testing.assert_array_equal(plain, np.broadcast_to(normalised, plain.shape))  # exact (x - mean) * scale
    jittered = draw(colour_rec, 64, 200, min_area=1, max_area=1, aspect=(1, 1), mirror=False)
    offsets = []
    for image in np.round(rgb(jittered)).astype(np.uint8):
        found, error = hls_offsets(reference[:, :, ::-1].copy(), image.transpose(1, 2, 0)[:, :, ::-1].copy())
        assert error <= 1, "the output is not an HSL shift of the input"
        offsets.append(found)
    offsets = np.array(offsets)
    bounds = np.array(spec.HSL)
    assert (np.abs(offsets) <= bounds).all()
    rng = np.random.default_rng(0)
    for k, bound in enumerate(bounds):  # (u1 + 4 u2) / 5 mapped to [-bound, bound], truncated
        simulated = ((rng.random(20000) + 4 * rng.random(20000)) / 5 * 2 * bound - bound).astype(int)
        assert_same_distribution(offsets[:, k], simulated, "HSL offset %d" % k)

"""The authors' training augmentation as parameters: what it does, its defaults (their README) and the checks of
its values. ``draws`` makes its random draws, ``kernel`` computes a sample's pixels from them and ``pipeline`` runs
both over a .rec (aug="fork"); aug="stock" hands the same parameters to ImageRecordIter (``training``)."""
from dataclasses import dataclass

from ..checks import DataError

# crop area 8-100 %, aspect 3/4-4/3, HSL jitter, random mirror
MIN_AREA, MAX_AREA = 0.08, 1.0
ASPECT = (3 / 4, 4 / 3)
HSL = (20, 40, 50)


@dataclass(frozen=True)
class Augmentation:
    """The training transform of the authors' MXNet fork (``aug_torch`` + their iterator's mirror and
    normalisation) on images decoded as OpenCV does (3-channel BGR), cropping ``image_size`` x ``image_size``:

    1. aspect: r = lo + (hi - lo)(u1 + u2)/2 (triangular); width and height are scaled by 1.1/r and 1.1 r,
       swapped with probability 1/2, giving W' = ceil(1.1 W / r), H' = ceil(1.1 H r);
    2. area: a ~ U[min_area, max_area]; s = max((S + 0.4) / H', (S + 0.4) / W') / sqrt(a); the stretched image
       scaled by s is cropped S x S at a uniform position, so the crop covers a fraction a of the stretched
       image's short-side square (its aspect in the original image is r^2 or 1/r^2);
    3. HSL: offsets (u1 + 4 u2)/5 mapped to [-max, max] (truncated to int), see ``kernel.hsl_jitter``;
    4. mirror with probability 1/2; (x - MEAN_RGB) * SCALE.
    The fork resamples the whole image twice (resize to W' x H', then warpAffine); here the crop window is mapped
    back to the original image, rounded to whole pixels, and resized once (bicubic): the same geometry to half a
    source pixel, at a fraction of the cost.

    Every random draw of sample ``position`` of the pass ``key`` (``draws.pass_key``) comes from its own
    generator, ``np.random.default_rng([*key, position])``, in a fixed order (window, HSL, mirror), so a sample's
    result depends neither on thread scheduling nor on where a run resumed.
    """

    image_size: int
    min_area: float = MIN_AREA
    max_area: float = MAX_AREA
    aspect: tuple = ASPECT
    hsl: tuple = HSL
    mirror: bool = True

    def __post_init__(self):
        if self.image_size < 1:
            raise DataError("image_size must be positive, got %d" % self.image_size)
        if not 0 < self.min_area <= self.max_area <= 1:
            raise DataError("crop area fractions must satisfy 0 < min_area <= max_area <= 1, got %g, %g"
                            % (self.min_area, self.max_area))
        if len(self.aspect) != 2 or not 0 < self.aspect[0] <= self.aspect[1]:
            raise DataError("aspect must be (min, max) with 0 < min <= max, got %s" % (self.aspect,))
        if len(self.hsl) != 3 or min(self.hsl) < 0:
            raise DataError("hsl must be three non-negative bounds (H, S, L), got %s" % (self.hsl,))


def add_arguments(group):
    """The augmentation's command-line flags, with the defaults above (train_imagenet.py's data group)."""
    group.add_argument("--min-area", type=float, default=MIN_AREA, help="smallest random crop, fraction of the area")
    group.add_argument("--max-area", type=float, default=MAX_AREA, help="largest random crop, fraction of the area")
    group.add_argument("--aspect", type=float, nargs=2, default=ASPECT, metavar=("MIN", "MAX"),
                       help="random crop aspect ratio range")
    group.add_argument("--hsl", type=int, nargs=3, default=HSL, metavar=("H", "S", "L"),
                       help="random HSL jitter bounds")
    group.add_argument("--no-mirror", action="store_true", help="disable random horizontal flips")


def from_options(options):
    """The ``Augmentation`` fields (all but the image size) that the flags of ``add_arguments`` set."""
    return {"min_area": options.min_area, "max_area": options.max_area, "aspect": tuple(options.aspect),
            "hsl": tuple(options.hsl), "mirror": not options.no_mirror}

"""The pixels every iterator yields: float32 NCHW, RGB, normalised as (pixel - MEAN_RGB) * SCALE, resampled
bicubically."""

MEAN_RGB = (124, 117, 104)
SCALE = 0.0167
BICUBIC = 2  # MXNet's and OpenCV's interpolation code for bicubic

"""Real colour photographs that ship inside the scikit-image and scikit-learn wheels, for benchmarks and tests."""
import pathlib

NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg",
         "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "china.jpg", "flower.jpg")


def sample_photo(name):
    """Path of a sample photograph inside the installed scikit-image or scikit-learn package."""
    import skimage
    import sklearn
    for folder in (pathlib.Path(skimage.__file__).parent / "data",
                   pathlib.Path(sklearn.__file__).parent / "datasets" / "images"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)

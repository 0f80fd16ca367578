"""A run's recipe: every flag that decides its result, with the world size, the library versions and the
repository commit. Each checkpoint carries the recipe it was trained with (``checkpoint.recipe_path``); resuming
restores it, and a flag of the resuming command that contradicts it is refused unless the change is asked for."""
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RecipeError(ValueError):
    """A recipe that cannot be read, or a command that contradicts one; the message is one line."""


def environment():
    """The versions of the libraries that compute a run and the repository commit (None outside a git checkout)."""
    import cv2
    import mxnet
    import numpy
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"mxnet": mxnet.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__,
            "git_commit": commit}


def make(flags, world_size, devices):
    """A recipe: ``flags`` ({flag destination: value}), the number of workers and of devices per worker, and
    ``environment()``."""
    return {"flags": _plain(flags), "world_size": world_size, "devices": devices, **environment()}


def load(path):
    """A recipe from a JSON file, checked to hold its ``flags``."""
    try:
        with open(path) as f:
            recipe = json.load(f)
    except OSError as err:
        raise RecipeError("%s: cannot read the recipe (%s)" % (path, err.strerror)) from None
    except ValueError as err:
        raise RecipeError("%s: not a JSON recipe (%s)" % (path, err)) from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("flags"), dict):
        raise RecipeError("%s: not a recipe (expected a JSON object with 'flags')" % path)
    return recipe


def merge(values, given, saved, source, allow_change):
    """``values`` ({flag destination: value} of a command) on top of the recipe ``saved`` (read from
    ``source``): a flag the command did not give takes the recipe's value; a flag it gave with another value is a
    RecipeError naming both values, or, with ``allow_change``, a change. Returns (merged values, the changes as
    'flag: old -> new' lines)."""
    merged, changes = dict(values), []
    for name, old in saved.items():
        if name not in values:
            continue
        if name not in given:
            merged[name] = old
        elif _plain(values[name]) != _plain(old):
            flag = "--" + name.replace("_", "-")
            if not allow_change:
                raise RecipeError("%s %s conflicts with the recipe of %s (%s %s); give --allow-recipe-change to "
                                  "change it" % (flag, _show(values[name]), source, flag, _show(old)))
            changes.append("%s: %s -> %s" % (flag, _show(old), _show(values[name])))
    return merged, changes


def _plain(value):
    """``value`` as JSON holds it (tuples become lists), for comparison."""
    return json.loads(json.dumps(value))


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "''"
    return str(value)

"""tools/convert_weights.py: checkpoints <-> timm's DPN state dict, checked against timm's own names, shapes and
logits (tools/dev/timm_reference.py in .venv-timm)."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import symbols
from dpn_mxnet import checkpoint, data, identify, timm_weights
from dpn_mxnet.sample_photos import sample_photo
from dpn_mxnet.packing import IMAGENET_CLASSES, read_class_table

from checkpoints import msra_params
from conftest import REPO
from in_process import run_script

TIMM_PYTHON = REPO / ".venv-timm" / "bin" / "python"
MANIFEST = REPO / "tests" / "data" / "timm_dpn_manifest.json"
PHOTOS = {224: ("chelsea.png", "coffee.png"), 320: ("astronaut.png",)}
# A wrong mapping the shapes cannot reveal: the running variances of two 3x3 layers of one stage swapped.
SWAPPED = ("features.conv3_1.c3x3_b.bn.running_var", "features.conv3_2.c3x3_b.bn.running_var")


def run_tool(*args, python=sys.executable, check=True):
    done = subprocess.run([str(python), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def convert(*args, process=False):
    """The report of tools/convert_weights.py, run in this process (in_process.py) or, with ``process``, as one."""
    done = run_tool("tools/convert_weights.py", *args) if process else run_script("tools/convert_weights.py", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def trained_like_params(network, num_classes, classifier, seed=0):
    """MSRA weights, and BatchNorm scales, shifts and statistics spread the way trained ones are."""
    args, aux = msra_params(symbols.get_symbol(network, num_classes, classifier), seed)
    rng = np.random.RandomState(seed)
    for name in aux:
        shape = aux[name].shape
        aux[name] = mx.nd.array(rng.normal(0, 0.1, shape) if name.endswith("_mean") else rng.uniform(0.5, 2, shape))
    for name in args:
        if name.endswith("_gamma"):
            args[name] = mx.nd.array(rng.uniform(0.5, 1.5, args[name].shape))
        elif name.endswith("_beta"):
            args[name] = mx.nd.array(rng.normal(0, 0.1, args[name].shape))
    args[classifier + "_weight"] *= 0.02
    return args, aux


def released_checkpoint(folder, network, num_classes=1000, classifier=None):
    """A checkpoint as the authors released theirs (.params and symbol, no P-model.json): (prefix, args, aux)."""
    classifier = classifier or symbols.default_classifier(symbols.resolve(network), num_classes)
    args, aux = trained_like_params(network, num_classes, classifier)
    prefix = str(folder / network)
    checkpoint.save(prefix, 0, symbols.get_symbol(network, num_classes, classifier), args, aux)
    return prefix, args, aux


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Per variant: the released-style checkpoint, its parameters and its timm file made by the tool (about 2 GB
    for the six, removed afterwards); for dpn68 the tool runs as a process of its own."""
    made = {}
    for network in symbols.VARIANTS:
        folder = tmp_path_factory.mktemp(network)
        prefix, args, aux = released_checkpoint(folder, network)
        report = convert("to-timm", "--model-prefix", prefix, "-o", folder / "model.safetensors",
                         process=network == "dpn68")
        assert report["network"] == network and report["num_classes"] == 1000
        made[network] = (prefix, args, aux, folder / "model.safetensors")
    yield made
    for _, _, _, timm_file in made.values():
        shutil.rmtree(timm_file.parent)


def assert_same_checkpoint(prefix, args, aux):
    ckpt = checkpoint.load(prefix, 0)
    assert sorted(ckpt.arg_params) == sorted(args) and sorted(ckpt.aux_params) == sorted(aux)
    for mine, theirs in ((ckpt.arg_params, args), (ckpt.aux_params, aux)):
        for name, value in theirs.items():
            assert mine[name].dtype == np.float32
            assert np.array_equal(mine[name].asnumpy(), value.asnumpy()), name


def test_parameter_layers_name_every_parameter_but_the_classifier():
    for network in symbols.VARIANTS:
        listed = set()
        for _, _, bn, conv in symbols.parameter_layers(network):
            listed |= {"%s_%s" % (bn, field) for field in ("gamma", "beta", "moving_mean", "moving_var")} if bn else set()
            listed |= {conv + "_weight"} if conv else set()
        args, aux = identify.parameter_shapes(symbols.get_symbol(network), (1, 3, 224, 224))
        classifier = symbols.default_classifier(symbols.resolve(network), 1000)
        assert listed | {classifier + "_weight", classifier + "_bias"} == set(args) | set(aux), network


def test_mapping_matches_timm_state_dict_manifest():
    """Keys, shapes and dtypes of every variant equal timm's own state dict (tools/dev/timm_reference.py manifest)."""
    manifest = json.loads(MANIFEST.read_text())["models"]
    assert sorted(manifest) == sorted(symbols.VARIANTS)
    for network in symbols.VARIANTS:
        classifier = symbols.default_classifier(symbols.resolve(network), 1000)
        shapes = timm_weights.our_shapes(network, 1000, classifier)
        args = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
        state = timm_weights.to_timm(args, {}, network, 1000, classifier)
        assert {k: [list(v.shape), str(v.dtype)] for k, v in state.items()} == manifest[network], network


@pytest.mark.parametrize("network", list(symbols.VARIANTS))
def test_round_trip_is_bit_exact(converted, tmp_path, network):
    prefix, args, aux, timm_file = converted[network]
    report = convert("to-mxnet", timm_file, "--model-prefix", tmp_path / "back", process=network == "dpn68")
    assert (report["network"], report["classifier"]) == (network, "fc6-1k" if network == "dpn68b" else "fc6")
    assert_same_checkpoint(str(tmp_path / "back"), args, aux)
    assert checkpoint.load_model_info(str(tmp_path / "back")) == {
        "network": network, "num_classes": 1000, "classifier": report["classifier"], "image_size": 224}
    os.remove(checkpoint.params_path(str(tmp_path / "back"), 0))


@pytest.mark.parametrize("network, num_classes, classifier", [("dpn68", 365, "fc6"), ("dpn68b", 4786, "fc6"),
                                                              ("dpn68b", 1000, "fc6")])
def test_mapping_keeps_class_count_and_classifier_name(network, num_classes, classifier):
    args, aux = trained_like_params(network, num_classes, classifier)
    state = timm_weights.to_timm(args, aux, network, num_classes, classifier)
    assert state["classifier.weight"].shape == (num_classes, symbols.feature_channels(network), 1, 1)
    found, classes, name, args_back, aux_back = timm_weights.from_timm(state, classifier=classifier)
    assert (found, classes, name) == (network, num_classes, classifier)
    for mine, theirs in ((args_back, args), (aux_back, aux)):
        assert sorted(mine) == sorted(theirs)
        assert all(np.array_equal(mine[n].asnumpy(), theirs[n].asnumpy()) for n in theirs)
    hub_style = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}  # as timm's hub files
    assert timm_weights.from_timm(hub_style, classifier=classifier)[:3] == (network, num_classes, classifier)


def test_converted_checkpoint_predicts(converted, tmp_path):
    """The result is an ordinary checkpoint: tools/predict.py classifies with it as the original graph does."""
    _, args, aux, timm_file = converted["dpn68"]
    convert("to-mxnet", timm_file, "--model-prefix", tmp_path / "dpn68")
    photo = str(sample_photo("chelsea.png"))
    top = json.loads(run_tool("tools/predict.py", "--model-prefix", tmp_path / "dpn68", "--json", photo).stdout)["top"]
    expected = mxnet_logits("dpn68", args, aux, data.load_image(photo, 224).asnumpy())[0]
    assert len(top) == 5 and top[0]["class"] == read_class_table(IMAGENET_CLASSES)[int(np.argmax(expected))][0]


def error_of(*args):
    done = run_tool("tools/convert_weights.py", *args, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_file_of_another_network_or_truncated_is_refused_in_one_line(converted, tmp_path):
    _, _, _, dpn68 = converted["dpn68"]
    message = error_of("to-mxnet", dpn68, "--network", "dpn92", "--model-prefix", tmp_path / "a")
    assert "features.conv1_1.bn.weight has shape (10,) but dpn92 with 1000 classes" in message
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(dpn68.read_bytes()[:1000000])
    assert "not a readable safetensors file" in error_of("to-mxnet", truncated, "--model-prefix", tmp_path / "b")
    state = timm_weights.read_state(str(dpn68))
    del state["features.conv5_3.c1x1_c.conv.weight"]
    timm_weights.write_state(str(tmp_path / "short.safetensors"), state)
    message = error_of("to-mxnet", tmp_path / "short.safetensors", "--model-prefix", tmp_path / "c")
    assert "matches none of dpn68" in message and "closest is dpn68" in message
    assert "no tensor features.conv5_3.c1x1_c.conv.weight" in message
    state = timm_weights.read_state(str(dpn68))
    state["head.extra"] = np.zeros(3, np.float32)
    timm_weights.write_state(str(tmp_path / "extra.safetensors"), state)
    message = error_of("to-mxnet", tmp_path / "extra.safetensors", "--network", "dpn68", "--model-prefix", tmp_path / "d")
    assert "tensor head.extra (and 0 more) is not part of dpn68" in message
    assert not list(tmp_path.glob("?-*.params"))


def test_checkpoint_with_foreign_tensor_is_refused(tmp_path):
    prefix, args, aux = released_checkpoint(tmp_path, "dpn68")
    args["stray_weight"] = mx.nd.zeros(2)
    checkpoint.save(prefix, 1, symbols.get_symbol("dpn68"), args, aux)
    message = error_of("to-timm", "--model-prefix", prefix, "--load-epoch", 1, "-o", tmp_path / "w.safetensors")
    assert "stray_weight" in message and not (tmp_path / "w.safetensors").exists()


def timm_environment():
    """.venv-timm's python; skips without it, except under CI=true where its absence is a failure."""
    if not TIMM_PYTHON.is_file():
        message = "%s not found (make timm-venv builds it): no comparison with timm's logits" % TIMM_PYTHON
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return TIMM_PYTHON


def mxnet_logits(network, args, aux, images):
    """Our logits: the training graph at 224, the mean-max test graph above it."""
    size = images.shape[-1]
    classifier = identify.classifier_name(args)
    graph = (symbols.logits(network, 1000, classifier, size) if size == 224 else
             symbols.score_logits(network, 1000, classifier, size, meanmax=True))
    inputs = {n: v for n, v in args.items() if n in graph.list_arguments()}
    inputs["data"] = mx.nd.array(images)
    executor = graph.bind(mx.cpu(), inputs, aux_states=aux, grad_req="null")
    return executor.forward(is_train=False)[0].asnumpy()


def close(ours, theirs):
    """Equal within float32 rounding over the network's depth: 1e-5 of the largest logit."""
    return bool(np.abs(ours - theirs).max() <= 1e-5 * np.abs(ours).max())


def test_logits_equal_timms(converted, tmp_path):
    """All six variants on real photos, at 224 and in the 320 mean-max graph against timm's test-time pool, and a
    mapping with two BN statistics swapped, which the comparison must catch."""
    python = timm_environment()
    images = {size: np.concatenate([data.load_image(str(sample_photo(p)), size).asnumpy() for p in photos])
              for size, photos in PHOTOS.items()}
    jobs, ours = [], {}
    for size, batch in images.items():
        np.save(tmp_path / ("images%d.npy" % size), batch)
    for network, (_, args, aux, timm_file) in converted.items():
        for size in images:
            ours[network, size] = mxnet_logits(network, args, aux, images[size])
            jobs.append({"model": network, "weights": str(timm_file), "images": str(tmp_path / ("images%d.npy" % size)),
                         "out": str(tmp_path / ("%s-%d.npy" % (network, size))), "test_time_pool": size != 224})
    state = timm_weights.read_state(str(converted["dpn68"][3]))
    state[SWAPPED[0]], state[SWAPPED[1]] = state[SWAPPED[1]], state[SWAPPED[0]]
    timm_weights.write_state(str(tmp_path / "swapped.safetensors"), state)
    jobs.append(dict(jobs[0], weights=str(tmp_path / "swapped.safetensors"), out=str(tmp_path / "swapped.npy")))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    run_tool("-m", "tools.dev.timm_reference", "logits", tmp_path / "jobs.json", python=python)
    differences = {key: float(np.abs(value - np.load(tmp_path / ("%s-%d.npy" % key))).max())
                   for key, value in ours.items()}
    swapped = np.load(tmp_path / "swapped.npy")
    print(json.dumps({"max |logit difference|, max |logit|": {"%s@%d" % key: [diff, float(np.abs(ours[key]).max())]
                                                             for key, diff in differences.items()},
                      "swapped statistics, dpn68@224": float(np.abs(ours["dpn68", 224] - swapped).max())}))
    for key, value in ours.items():
        assert close(value, np.load(tmp_path / ("%s-%d.npy" % key))), (key, differences[key])
    assert not close(ours["dpn68", 224], swapped)

"""The training run's configuration, in-process: built once and frozen, every option that decides the result saved
in the recipe and restored on resume, no environment variable left behind, and the checkpoint policy's files."""
import dataclasses
import json
import logging
import os

import mxnet as mx
import pytest

import symbols
from dpn_mxnet import checkpoint, checkpoint_policy, recipe
from train import train_imagenet

from test_train import TINY

# The options that do not decide a run's result, each with the reason; every other option must be in the recipe.
NOT_DECIDING = {
    "help": "prints the help", "data_nthreads": "decode threads: speed only",
    "gpus": "which devices: the recipe has their number", "num_epochs": "how far the run goes",
    "model_prefix": "where it is written", "save_period": "what is written", "keep_last": "what is kept",
    "keep_every": "what is kept", "resume": "where it starts, from the recipe it saved",
    "recipe": "the recipe it starts from", "allow_recipe_change": "permission", "allow_momentum_reset": "permission",
    "overwrite": "permission", "disp_batches": "logging", "log_file": "logging", "benchmark": "not a training run",
    "benchmark_batches": "not a training run"}
LOG = logging.getLogger("test_run_config")


def plain(value):
    return json.loads(json.dumps(value))


def non_default_words(action):
    """Command-line words giving ``action`` a value other than its default."""
    flag = action.option_strings[0]
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [flag, next(choice for choice in action.choices if choice != action.default)]
    if action.nargs:
        return [flag] + [str(value + 1) for value in action.default]
    if action.dest == "lr_steps":
        return [flag, "7,8"]
    if action.type in (int, float):
        return [flag, str((action.default or 0) + 2)]
    return [flag, "value-of-" + action.dest]


def commit_epoch(prefix, epoch, saved_recipe):
    """A committed checkpoint set of epoch ``epoch`` under ``prefix`` with ``saved_recipe``."""
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    checkpoint.save(prefix, epoch, symbol, {"fc6_bias": mx.nd.ones(10)}, {}, lambda path: open(path, "wb").close(),
                    recipe=dict(saved_recipe, epoch=epoch), metrics={"epoch": epoch})


def test_every_option_is_in_the_recipe_or_named_as_not_deciding():
    parser = train_imagenet.build_parser()
    options = {action.dest for action in parser._actions}
    assert set(train_imagenet.RECIPE_FLAGS) == options - set(NOT_DECIDING)
    assert set(NOT_DECIDING) <= options


def test_a_new_option_of_a_recipe_group_joins_the_recipe():
    parser = train_imagenet.build_parser()
    training = next(group for group in parser._action_groups if group.title == "training")
    training.add_argument("--label-smoothing", type=float, default=0)
    assert "label_smoothing" in train_imagenet.recipe_flags(parser)


def test_a_resume_restores_every_recipe_flag(tmp_path):
    """The recipe step alone: a checkpoint whose recipe gives every flag a value other than its default, resumed by a
    command that names none of them, restores each."""
    parser = train_imagenet.build_parser()
    actions = {action.dest: action for action in parser._actions}
    words = [word for name in train_imagenet.RECIPE_FLAGS for word in non_default_words(actions[name])]
    saved = {name: value for name, value in train_imagenet.parse(parser, words)[0].items()
             if name in train_imagenet.RECIPE_FLAGS}
    defaults = train_imagenet.parse(parser, [])[0]
    assert [name for name in saved if plain(saved[name]) == plain(defaults[name])] == []
    prefix = str(tmp_path / "run")
    commit_epoch(prefix, 2, {"flags": saved, "world_size": 1, "devices": 1})

    options, given = train_imagenet.parse(parser, ["--model-prefix", prefix, "--resume", "auto", "--num-epochs", "5"])
    begin_epoch, notes = train_imagenet.resume_epoch(options)
    assert (begin_epoch, notes) == (2, [])
    restored, base_recipe, notes = train_imagenet.apply_recipe(options, given, begin_epoch)
    assert notes == [] and base_recipe["flags"] == plain(saved)
    assert {name: plain(restored[name]) for name in saved} == plain(saved)


def test_the_recipe_saved_is_the_configuration_and_a_resume_rebuilds_it(tmp_path, digits_rec):
    """End to end in-process: a run's configuration with non-default options, the recipe a run of it saves (every
    recipe flag, the learning rate filled in), and the configuration that a resume from that recipe builds."""
    prefix = str(tmp_path / "run")
    config = train_imagenet.parse_args([str(word) for word in [
        "--network", TINY, "--size", 32, "--data-train", digits_rec.train, "--data-val", digits_rec.val,
        "--model-prefix", prefix, "--batch-size", 6, "--lr-steps", "2,3", "--lr-factor", 0.5, "--mom", 0.8,
        "--wd", 3e-4, "--seed", 7, "--warmup-epochs", 1, "--aug", "fork", "--min-area", 0.4, "--max-area", 0.9,
        "--aspect", 0.8, 1.2, "--hsl", 1, 2, 3, "--no-mirror", "--bad-records", "skip", "--arrangement", "authors",
        "--classifier", "head", "--pretrained", "weights.params"]])
    assert isinstance(config, train_imagenet.RunConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(TypeError):
        config.options["wd"] = 0
    kv = mx.kv.create("local")
    lr, saved = train_imagenet.learning_rate(config, kv, len(config.contexts), LOG)
    assert lr == pytest.approx(0.316 * 6 / 1280)
    assert set(saved["flags"]) == set(train_imagenet.RECIPE_FLAGS)
    assert saved["flags"] == plain(dict(config.recipe_flags(), lr=lr))
    assert (saved["flags"]["wd"], saved["flags"]["hsl"], saved["flags"]["num_classes"]) == (3e-4, [1, 2, 3], 10)

    commit_epoch(prefix, 1, saved)
    resumed = train_imagenet.parse_args(["--model-prefix", prefix, "--resume", "auto", "--num-epochs", "3"])
    assert resumed.begin_epoch == 1 and resumed.notes == ()
    assert plain(resumed.recipe_flags()) == saved["flags"]
    assert train_imagenet.learning_rate(resumed, kv, len(resumed.contexts), LOG)[1]["flags"] == saved["flags"]


@pytest.fixture
def two_device_benchmark(monkeypatch, tmp_path):
    """The benchmark's configuration on two CPU contexts (a local kvstore then holds the optimizer, unless told
    otherwise), and a function that sets up its training."""
    monkeypatch.setenv("DPN_CPU_DEVICES", "2")
    monkeypatch.delenv("MXNET_UPDATE_ON_KVSTORE", raising=False)
    config = train_imagenet.parse_args(["--network", TINY, "--size", "32", "--batch-size", "2", "--benchmark"])
    return lambda: train_imagenet.set_up(config, mx.kv.create(config.kv_store), str(tmp_path), LOG)


def test_no_environment_variable_is_left_set(two_device_benchmark, monkeypatch):
    before = dict(os.environ)
    run = two_device_benchmark()
    assert dict(os.environ) == before
    assert run.module._update_on_kvstore is False  # the optimizer on the worker, where its states can be saved
    monkeypatch.setattr(train_imagenet, "OPTIMIZER_ENVIRONMENT", {})
    assert two_device_benchmark().module._update_on_kvstore is True  # MXNet's default, which the setting changes


def test_the_checkpoint_policy_saves_every_period_and_the_last_epoch_and_keeps_what_it_says(two_device_benchmark,
                                                                                          tmp_path):
    module = two_device_benchmark().module
    symbol = symbols.get_symbol(TINY, 1000, image_size=32)
    prefix = str(tmp_path / "p")
    reader = checkpoint_policy.CheckpointPolicy(prefix, 5, save_period=2, keep_last=1, keep_every=2, writes=False)
    reader.begin({"network": TINY}, 0)
    reader.save(module, symbol, {"flags": {}}, 1, {"epoch": 1})
    assert os.listdir(tmp_path) == []  # another rank's policy writes nothing
    policy = checkpoint_policy.CheckpointPolicy(prefix, 5, save_period=2, keep_last=1, keep_every=2, logger=LOG)
    policy.begin({"network": TINY}, 0)
    for epoch in range(1, 6):
        policy.save(module, symbol, {"flags": {}}, epoch, {"epoch": epoch})
    assert sorted(os.listdir(tmp_path)) == [
        "p-0002.params", "p-0002.recipe.json", "p-0004.params", "p-0004.recipe.json", "p-0005.params",
        "p-0005.recipe.json", "p-0005.states", "p-metrics.jsonl", "p-model.json", "p-symbol.json"]
    assert checkpoint.available_epochs(prefix) == [2, 4, 5]
    assert [s["epoch"] for s in checkpoint.read_metrics(checkpoint.metrics_path(prefix))] == [1, 2, 3, 4, 5]
    assert recipe.load(checkpoint.recipe_path(prefix, 4))["epoch"] == 4

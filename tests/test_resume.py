"""A resumed run is the same run: repeats and resumes are bit-identical (one process and dist_sync, both
augmentations), the recipe travels with the checkpoint, the launcher restarts a failed job, retention, float32
checkpoints of float16 runs, and several devices against one."""
import json
import os
import signal
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import symbols
from dpn_mxnet import checkpoint, checkpoint_policy, cli, data, devices
from dpn_mxnet.data import training
from dpn_mxnet.fit import master_weights, state_digest, train_step, weights_digest

from conftest import REPO
from launch_helpers import LauncherRun, run_launcher
from test_train import LAUNCH_2X1, TINY, run_train, train_command

# 4 epochs, the rate divided by 10 after the second: a resume from epoch 2 must restore the schedule
RUN = ["--batch-size", 8, "--lr", 0.1, "--lr-steps", 2, "--min-area", 0.5, "--no-mirror"]


def digests(prefix):
    """{epoch: state_sha1} from the metrics file beside the checkpoints."""
    return {s["epoch"]: s["state_sha1"] for s in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))}


def saved_bytes(prefix, epoch):
    return (open(checkpoint.params_path(str(prefix), epoch), "rb").read(),
            open(checkpoint.states_path(str(prefix), epoch), "rb").read())


def files(prefix):
    return sorted(name for name in os.listdir(prefix.parent) if name.startswith(prefix.name + "-0"))


def train_ok(command):
    done = run_train(command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("aug", cli.AUGMENTATIONS)
def test_repeated_and_resumed_runs_are_bit_identical(tmp_path, digits_rec, aug):
    straight, repeated, resumed = tmp_path / "straight", tmp_path / "repeated", tmp_path / "resumed"
    for prefix in (straight, repeated):
        train_ok(train_command(digits_rec, prefix, "--aug", aug, "--num-epochs", 4, *RUN))
    train_ok(train_command(digits_rec, resumed, "--aug", aug, "--num-epochs", 2, "--keep-last", 1, *RUN))
    assert files(resumed) == ["resumed-0002.params", "resumed-0002.recipe.json", "resumed-0002.states"]
    # only the prefix and the run's length: the recipe of epoch 2 brings back every other flag
    done = train_ok(["python", "train/train_imagenet.py", "--model-prefix", resumed, "--resume", "auto",
                     "--num-epochs", 4, "--disp-batches", 5])
    assert "resuming from %s" % checkpoint.params_path(str(resumed), 2) in done.stdout

    expected = digests(straight)
    assert list(expected) == [1, 2, 3, 4] and len(set(expected.values())) == 4
    assert digests(repeated) == digests(resumed) == expected
    rates = [s["learning_rate"] for s in checkpoint.read_metrics(checkpoint.metrics_path(str(resumed)))]
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01])
    for prefix in (repeated, resumed):
        assert saved_bytes(prefix, 4) == saved_bytes(straight, 4)

    replayed = tmp_path / "replayed"  # a new run from the saved recipe repeats the first epoch
    train_ok(["python", "train/train_imagenet.py", "--recipe", checkpoint.recipe_path(str(straight), 4),
              "--model-prefix", replayed, "--num-epochs", 1])
    assert digests(replayed) == {1: expected[1]}


def test_recipe_is_saved_whole_and_guards_the_resume(tmp_path, digits_rec):
    prefix = tmp_path / "run"
    train_ok(train_command(digits_rec, prefix, "--num-epochs", 1, "--lr", 0.05, "--batch-size", 16))
    recipe = json.loads(open(checkpoint.recipe_path(str(prefix), 1)).read())
    assert recipe["flags"]["lr"] == 0.05 and recipe["flags"]["batch_size"] == 16 and recipe["flags"]["seed"] == 0
    assert recipe["world_size"] == 1 and recipe["devices"] == 1 and recipe["epoch"] == 1
    assert recipe["mxnet"] == mx.__version__ and recipe["numpy"] == np.__version__ and recipe["opencv"]
    assert len(recipe["git_commit"] or "x" * 40) == 40

    refused = run_train(train_command(digits_rec, prefix, "--num-epochs", 2, "--resume", "auto", "--lr", 0.1))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert ("--lr 0.1 conflicts with the recipe of %s-0001 (--lr 0.05); give --allow-recipe-change to change it"
            % prefix) in refused.stderr.strip().splitlines()[-1]
    assert checkpoint.available_epochs(str(prefix)) == [1]

    changed = train_ok(train_command(digits_rec, prefix, "--num-epochs", 2, "--resume", "auto", "--lr", 0.1,
                                     "--allow-recipe-change"))
    assert "recipe of %s-0001, changed: --lr: 0.05 -> 0.1" % prefix in changed.stdout
    assert [s["learning_rate"] for s in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))] == [0.05, 0.1]
    assert json.loads(open(checkpoint.recipe_path(str(prefix), 2)).read())["flags"]["batch_size"] == 16


def test_metrics_file_drops_the_epochs_a_resume_replaces(tmp_path):
    prefix = str(tmp_path / "m")
    for epoch in (1, 2, 3):
        checkpoint.write_metrics(prefix, {"epoch": epoch, "run": "first"})
    checkpoint.write_metrics(prefix, through=1)  # resumed from epoch 1
    checkpoint.write_metrics(prefix, {"epoch": 2, "run": "second"})
    assert checkpoint.read_metrics(checkpoint.metrics_path(prefix)) == [{"epoch": 1, "run": "first"},
                                                                         {"epoch": 2, "run": "second"}]
    assert sorted(os.listdir(tmp_path)) == ["m-metrics.jsonl"]  # no temporary file left


def tiny_module(contexts, batch, kvstore=None):
    module = mx.mod.Module(symbols.get_symbol(TINY, 10, image_size=32), context=contexts)
    module.bind(data_shapes=[("data", (batch, 3, 32, 32))], label_shapes=[("softmax_label", (batch,))])
    mx.random.seed(3)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    module.init_optimizer(kvstore=kvstore, optimizer="sgd",
                          optimizer_params={"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4})
    return module


def digit_batches(digits, batch, count):
    batches = training.train_iter(digits.train, batch, 32, threads=1, min_area=1, max_area=1, aspect=(1, 1),
                                  hsl=(0, 0, 0), mirror=False)
    return [next(batches) for _ in range(count)]


def test_state_digest_covers_bn_statistics_and_momentum(digits_rec):
    module = tiny_module([mx.cpu()], 8)
    train_step(module, digit_batches(digits_rec, 8, 1)[0])
    weights, state = weights_digest(module), state_digest(module)
    arg_params, aux_params = module.get_params()
    name = sorted(aux_params)[0]
    aux_params[name][0] += 1
    module.set_params(arg_params, aux_params)
    assert weights_digest(module) == weights and state_digest(module) != state
    aux_params[name][0] -= 1
    module.set_params(arg_params, aux_params)
    assert state_digest(module) == state
    momentum = module._updater.states[0]
    momentum[:] = momentum + 1
    assert weights_digest(module) == weights and state_digest(module) != state


def test_float16_runs_save_the_float32_master_weights():
    """A graph with a float16 weight on operators the CPU runs in float16; multi-precision SGD keeps float32
    master copies, which are what the checkpoint must hold (the float16 copy has lost their low bits)."""
    scale = mx.sym.var("scale_weight", shape=(1, 3), dtype="float16")
    output = mx.sym.broadcast_mul(mx.sym.Cast(mx.sym.var("data"), dtype="float16"), scale)
    loss = mx.sym.MakeLoss(mx.sym.sum(mx.sym.square(mx.sym.Cast(output, dtype="float32") - 1)))
    module = mx.mod.Module(loss, context=mx.cpu(), label_names=None)
    module.bind(data_shapes=[("data", (2, 3))])
    module.init_params(mx.init.Constant(0.3))
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9,
                                                             "multi_precision": True})
    batch = mx.io.DataBatch([mx.nd.array(np.random.RandomState(0).rand(2, 3))], None)
    for _ in range(3):
        train_step(module, batch)
    arg_params, _ = module.get_params()
    assert arg_params["scale_weight"].dtype == np.float16
    saved = checkpoint.float32_params(arg_params, master_weights(module))
    master = module._updater.states[0][1].asnumpy()
    assert saved["scale_weight"].dtype == np.float32
    np.testing.assert_array_equal(saved["scale_weight"].asnumpy(), master)
    assert not np.array_equal(master, arg_params["scale_weight"].asnumpy().astype(np.float32))
    cast = checkpoint.float32_params({"w": mx.nd.ones(2, dtype="float16")})  # no master copy: cast
    assert cast["w"].dtype == np.float32


@pytest.mark.parametrize("kvstore", ["local", "device"])
def test_two_cpu_contexts_train_like_one_with_the_doubled_batch(digits_rec, kvstore):
    """A batch of two copies of 8 digits: each of the two contexts normalises exactly what one context normalises
    over the 16, so one step moves the weights alike up to float rounding (BatchNorm's backward cancels heavily:
    reordering the samples of one batch moves the stem's update by about 0.1 %)."""
    two, one = tiny_module([mx.cpu(0), mx.cpu(1)], 16, mx.kv.create(kvstore)), tiny_module([mx.cpu()], 16)
    before = {name: value.asnumpy() for name, value in one.get_params()[0].items()}
    half = digit_batches(digits_rec, 8, 1)[0]
    doubled = mx.io.DataBatch([mx.nd.concat(half.data[0], half.data[0], dim=0)],
                              [mx.nd.concat(half.label[0], half.label[0], dim=0)])
    train_step(two, doubled, wait=True)
    train_step(one, doubled, wait=True)
    (two_args, two_aux), (one_args, one_aux) = two.get_params(), one.get_params()
    for name, start in before.items():
        moved = one_args[name].asnumpy() - start
        assert np.abs(moved).max() > 0, name
        assert np.abs(two_args[name].asnumpy() - start - moved).max() <= 1e-2 * np.abs(moved).max(), name
    for name, value in one_aux.items():  # the moving statistics: each context's, averaged
        np.testing.assert_allclose(two_aux[name].asnumpy(), value.asnumpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_training_and_scoring_on_two_cpu_contexts(tmp_path, digits_rec):
    prefix = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", **{devices.CPU_DEVICES_ENV: "2"})
    command = [sys.executable, *map(str, train_command(digits_rec, prefix, "--num-epochs", 1, "--kv-store",
                                                       "device", "--data-val", digits_rec.val, *RUN)[1:])]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 8 per device x 2 devices" in done.stdout
    summary = checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))[0]
    assert json.loads(open(checkpoint.recipe_path(str(prefix), 1)).read())["devices"] == 2

    scores = []
    for count in ("1", "2"):
        scored = subprocess.run([sys.executable, "test/score.py", "--model-prefix", str(prefix), "--load-epoch", "1",
                                 "--data-val", str(digits_rec.val), "--size", "32", "--batch-size", "8", "--json"],
                                cwd=REPO, capture_output=True, text=True, timeout=300,
                                env=dict(env, **{devices.CPU_DEVICES_ENV: count}))
        assert scored.returncode == 0, scored.stderr[-3000:]
        scores.append(json.loads(scored.stdout.strip().splitlines()[-1]))
    assert scores[0]["top1_error"] == scores[1]["top1_error"] and scores[0]["top5_error"] == scores[1]["top5_error"]
    assert scores[0]["images"] == data.num_records(digits_rec.val)
    assert abs(scores[0]["top1_error"] - summary["val_top1_error"]) <= 100 / scores[0]["images"] + 1e-3


def test_bad_cpu_devices_value_is_a_one_line_error(tmp_path, digits_rec):
    command = [sys.executable, *map(str, train_command(digits_rec, tmp_path / "x", "--num-epochs", 1)[1:])]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **{devices.CPU_DEVICES_ENV: "two"}))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "DPN_CPU_DEVICES: expected a number of CPU contexts of 1 or more, got 'two'" in done.stderr


def test_retention_keeps_what_it_says(tmp_path):
    prefix = tmp_path / "r"
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    for epoch in range(1, 8):
        checkpoint.save(str(prefix), epoch, symbol, {"fc6_bias": mx.nd.ones(10)}, {},
                        lambda path: open(path, "wb").close(), recipe={"flags": {}, "epoch": epoch},
                        metrics={"epoch": epoch})
        checkpoint_policy.apply_retention(str(prefix), keep_last=2, keep_every=3)
    assert files(prefix) == ["r-0003.params", "r-0003.recipe.json", "r-0006.params", "r-0006.recipe.json",
                             "r-0006.states", "r-0007.params", "r-0007.recipe.json", "r-0007.states"]
    assert [s["epoch"] for s in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))] == list(range(1, 8))
    assert checkpoint_policy.apply_retention(str(prefix), keep_last=0, keep_every=0) == []  # 0: keep everything


def dist_command(digits, prefix, aug, *options):
    return LAUNCH_2X1 + train_command(digits, prefix, "--kv-store", "dist_sync", "--aug", aug, *RUN, *options)


def test_dist_sync_resume_is_bit_identical(tmp_path, digits_rec, job_tag):
    straight, resumed = tmp_path / job_tag / "straight", tmp_path / job_tag / "resumed"
    for prefix, options in ((straight, ["--num-epochs", 3]), (resumed, ["--num-epochs", 1]),
                            (resumed, ["--num-epochs", 3, "--resume", "auto"])):
        run = run_launcher(dist_command(digits_rec, prefix, "fork", *options), timeout=240)
        assert run.returncode == 0, run.report("training failed")
    assert list(digests(straight)) == [1, 2, 3]
    assert digests(resumed) == digests(straight)
    assert saved_bytes(resumed, 3) == saved_bytes(straight, 3)


def test_launcher_restarts_a_killed_worker_and_ends_with_the_straight_weights(tmp_path, digits_rec, job_tag):
    straight, restarted = tmp_path / job_tag / "straight", tmp_path / job_tag / "restarted"
    run = run_launcher(dist_command(digits_rec, straight, "stock", "--num-epochs", 4), timeout=240)
    assert run.returncode == 0, run.report("training failed")

    run = LauncherRun(["--max-restarts", 1] + dist_command(digits_rec, restarted, "stock", "--num-epochs", 4))
    run.wait_for(r"saved .*restarted-0001\.params", timeout=180)
    os.kill(run.worker_pid(1), signal.SIGKILL)  # in epoch 2
    assert run.finish(300) == 0, run.report("the restarted job failed")
    restarts = [line for line in run.stderr_lines if line.startswith("launch.py: restart")]
    assert restarts == ["launch.py: restart 1 of 1: relaunching the job with --resume auto\n"], run.report("")
    assert "worker rank 1 on 127.0.0.1 failed: exit code 137 (killed by SIGKILL)" in run.stderr
    assert "resuming from" in run.stdout
    assert digests(restarted) == digests(straight)
    assert saved_bytes(restarted, 4) == saved_bytes(straight, 4)

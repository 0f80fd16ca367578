"""train/train_imagenet.py on real digit scans: dist_sync through the launcher, gradient aggregation, starting from
released weights, checkpoints and bad input (fault, restart and resume: test_resume.py)."""
import json
import os
import pickle
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import symbols
from dpn_mxnet import checkpoint, data
from dpn_mxnet.data import training
from dpn_mxnet.fit import SUMMARY_TAG

from conftest import REPO
from launch_helpers import run_launcher
from trained import copy_epoch

TINY = json.dumps({"stem_filters": 16, "stem_kernel": 3, "k_r": 32, "groups": 8, "k_sec": [1, 1, 1],
                   "inc_sec": [16, 16, 16], "bw_base": 32})
# the authors' augmentation adapted to 32 px digits: milder crops, and no mirror (a flipped digit is another glyph)
DIGITS_AUG = ["--min-area", 0.5, "--no-mirror"]
# no augmentation at all: square 32x32 records give the whole image, unchanged
NO_AUG = ["--min-area", 1, "--max-area", 1, "--aspect", 1, 1, "--hsl", 0, 0, 0, "--no-mirror"]
LAUNCH_2X1 = ["-n", 2, "-s", 1, "--launcher", "local", "--host-ip", "127.0.0.1"]


def train_command(digits, prefix, *options):
    return ["python", "train/train_imagenet.py", "--network", TINY, "--num-classes", 10, "--size", 32,
            "--data-train", digits.train, "--model-prefix", prefix, "--disp-batches", 5, *options]


def summaries(text, rank=None):
    """The epoch-summary dicts in a log or in the launcher's relayed output (optionally of one rank)."""
    found = []
    for line in text.splitlines():
        if SUMMARY_TAG in line and (rank is None or "rank %d " % rank in line):
            found.append(json.loads(line.split(SUMMARY_TAG, 1)[1]))
    return found


def run_train(command, timeout=300):
    """Run a ``train_command`` in this process's interpreter, without a launcher."""
    return subprocess.run([sys.executable, *map(str, command[1:])], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_dist_sync_training_on_digits_keeps_ranks_identical(tmp_path, digits_rec, job_tag):
    prefix = tmp_path / job_tag / "tiny"
    run = run_launcher(LAUNCH_2X1 + train_command(digits_rec, prefix, "--data-val", digits_rec.val,
                                                  "--kv-store", "dist_sync", "--batch-size", 8, "--num-epochs", 6,
                                                  "--lr", 0.1, "--lr-steps", 5, *DIGITS_AUG), timeout=240)
    assert run.returncode == 0, run.report("training failed")
    rank0, rank1 = summaries(run.stdout, 0), summaries(run.stdout, 1)
    assert [s["epoch"] for s in rank0] == [s["epoch"] for s in rank1] == [1, 2, 3, 4, 5, 6]
    assert [s["weights_sha1"] for s in rank0] == [s["weights_sha1"] for s in rank1]
    assert [s["learning_rate"] for s in rank0] == pytest.approx([0.1] * 5 + [0.01])
    assert rank0[-1]["val_images"] == data.num_records(digits_rec.val)  # every validation image exactly once
    assert rank0[-1]["val_top1_error"] < 50, "10 classes: chance is 90 % error"
    assert summaries((tmp_path / job_tag / "tiny-train.log").read_text()) == rank0
    saved = checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))
    assert [{k: v for k, v in s.items() if k != "checkpoint"} for s in saved] == rank0  # + the sizes of the files
    assert checkpoint.available_epochs(str(prefix)) == [4, 5, 6]  # the default retention: the last 3
    for epoch in (4, 5, 6):
        assert os.path.isfile(checkpoint.states_path(str(prefix), epoch))
    info = checkpoint.load_model_info(str(prefix))
    assert info["num_classes"] == 10 and info["image_size"] == 32 and symbols.resolve(info["network"])
    saved = mx.sym.load(checkpoint.symbol_path(str(prefix)))
    assert saved.tojson() == symbols.get_symbol(TINY, 10, image_size=32).tojson()  # the exact graph, not the fast one


def shard_gradients(digits, symbol, arg_params, aux_params, batch):
    """Summed loss gradients of each worker's shard (one batch each), computed here on one process."""
    gradients = []
    for part in (0, 1):
        batches = training.train_iter(digits.train, batch, 32, num_parts=2, part_index=part, seed=part, threads=1,
                                      min_area=1, max_area=1, aspect=(1, 1), hsl=(0, 0, 0), mirror=False)
        shard = next(iter(batches))
        executor = symbol.simple_bind(mx.cpu(), data=shard.data[0].shape, softmax_label=shard.label[0].shape)
        executor.copy_params_from(arg_params, aux_params)
        executor.forward(is_train=True, data=shard.data[0], softmax_label=shard.label[0])
        executor.backward()
        gradients.append({n: executor.grad_dict[n].asnumpy().astype(np.float64) for n in arg_params})
    return gradients


def test_one_dist_sync_step_applies_the_mean_of_both_workers_gradients(tmp_path, digits_rec, job_tag):
    """2 workers x batch b: the update is -lr x (sum of both shards' gradients) / 2b. With BatchNorm each worker
    normalises its own b samples, so the reference computes each shard's gradient separately, as a worker does."""
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    records = data.num_records(digits_rec.train)
    batch = records // 2
    shape = (batch, 3, 32, 32)
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=[("data", shape)], label_shapes=[("softmax_label", (batch,))])
    mx.random.seed(7)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    arg_params, aux_params = module.get_params()
    initial = str(tmp_path / "initial")
    checkpoint.save(initial, 0, symbol, arg_params, aux_params)

    prefix = tmp_path / job_tag / "step"
    lr = 0.5
    run = run_launcher(LAUNCH_2X1 + train_command(digits_rec, prefix, "--kv-store", "dist_sync", "--batch-size", batch,
                                                  "--num-epochs", 1, "--lr", lr, "--lr-steps", "", "--mom", 0,
                                                  "--wd", 0, "--pretrained", checkpoint.params_path(initial, 0),
                                                  *NO_AUG), timeout=180)
    assert run.returncode == 0, run.report("training failed")
    after = checkpoint.load(str(prefix), 1).arg_params
    first, second = shard_gradients(digits_rec, symbol, arg_params, aux_params, batch)
    for name, before in arg_params.items():
        before = before.asnumpy().astype(np.float64)
        expected = -lr * (first[name] + second[name]) / (2 * batch)
        moved = after[name].asnumpy() - before
        # float32 sums in BatchNorm's backward cancel heavily: reordering one batch moves the stem's gradients by
        # ~0.2 %; the classifier's are exact to ~1e-6
        tolerance = 1e-4 if name.startswith("fc6") else 1e-2
        rounding = 4 * np.spacing(np.float32(np.abs(before).max()))  # of the float32 weights themselves
        assert np.abs(moved - expected).max() <= tolerance * np.abs(expected).max() + rounding, name
        if name.startswith("fc6"):  # either worker's gradient alone would be a clearly different update
            for alone in (first[name], second[name]):
                assert np.abs(-lr * alone / batch - expected).max() > 0.05 * np.abs(expected).max()


def test_default_recipe_is_the_papers(tmp_path, digits_rec):
    """The README's defaults: SGD momentum 0.9, weight decay 1e-4, x0.1 at epochs 30, 60, 90 of 100, and a rate
    of 0.316 per 1280 images scaled to the actual global batch (here one worker with batch 8)."""
    from train import train_imagenet
    args = train_imagenet.parse_args(["--network", TINY, "--data-train", str(digits_rec.train)])
    assert (args.mom, args.wd, args.lr_steps, args.lr_factor, args.num_epochs) == (0.9, 1e-4, [30, 60, 90], 0.1, 100)
    done = run_train(train_command(digits_rec, tmp_path / "tiny", "--batch-size", 8, "--num-epochs", 1))
    assert done.returncode == 0, done.stderr
    (summary,) = summaries(done.stdout)
    assert summary["learning_rate"] == pytest.approx(0.316 * 8 / 1280, rel=1e-5)


def test_fine_tuning_from_released_weights_with_another_class_count(tmp_path, digits_rec):
    """Like the authors' 5k -> 1k models: every tensor but the classifier comes from the released file."""
    released = str(tmp_path / "released")
    source = symbols.get_symbol(TINY, 4786, image_size=32)
    arg_shapes, _, aux_shapes = source.infer_shape(data=(1, 3, 32, 32))
    rng = np.random.RandomState(0)
    arg_params = {n: mx.nd.array(rng.normal(0, 0.05, s)) for n, s in zip(source.list_arguments(), arg_shapes)
                  if n not in ("data", "softmax_label")}
    aux_params = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in zip(source.list_auxiliary_states(), aux_shapes)}
    checkpoint.save(released, 0, source, arg_params, aux_params)
    prefix = tmp_path / "tuned"
    done = run_train(train_command(digits_rec, prefix, "--batch-size", 16, "--num-epochs", 1, "--lr", 1e-4,
                                   "--pretrained", checkpoint.params_path(released, 0)))
    assert done.returncode == 0, done.stderr
    assert "left to the initializer: fc6_bias, fc6_weight" in done.stdout
    tuned = checkpoint.load(str(prefix), 1).arg_params
    assert tuned["fc6_weight"].shape == (10, symbols.feature_channels(TINY))
    stem = "conv1_x_1__conv_weight"
    assert np.abs(tuned[stem].asnumpy() - arg_params[stem].asnumpy()).max() < 1e-2  # loaded, then nudged


def crash_writing(path, *_, **__):
    """A writer interrupted half-way: part of a file, then Ctrl-C."""
    with open(path, "wb") as f:
        f.write(b"half a file")
    raise KeyboardInterrupt


@pytest.mark.parametrize("which", ["symbol", "states", "params", "model"])
def test_interrupted_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch, which):
    """Each file a checkpoint writes (symbol, optimizer states, parameters, model description) is replaced whole
    or not at all."""
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    prefix = str(tmp_path / "m")

    def states(path):
        with open(path, "wb") as f:
            f.write(b"the optimizer states of epoch 1")
    checkpoint.save(prefix, 1, symbol, {"fc6_bias": mx.nd.ones(10)}, {}, states)
    checkpoint.save_model_info(prefix, {"network": TINY, "image_size": 32})
    paths = [checkpoint.symbol_path(prefix), checkpoint.states_path(prefix, 1), checkpoint.params_path(prefix, 1),
             checkpoint.model_path(prefix)]
    before = {path: open(path, "rb").read() for path in paths}
    if which == "symbol":
        monkeypatch.setattr(mx.sym.Symbol, "save", lambda self, path, *_, **__: crash_writing(path))
    elif which == "states":
        states = crash_writing
    elif which == "params":
        monkeypatch.setattr(mx.nd, "save", crash_writing)
    with pytest.raises(KeyboardInterrupt):
        if which == "model":
            monkeypatch.setattr(json, "dump", lambda obj, f, **_: crash_writing(f.name))
            checkpoint.save_model_info(prefix, {"network": TINY, "image_size": 64})
        else:
            checkpoint.save(prefix, 1, symbols.get_symbol(TINY, 10, image_size=64), {"fc6_bias": mx.nd.zeros(10)},
                            {}, states)
    assert {path: open(path, "rb").read() for path in paths} == before
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path in paths)  # no leftovers
    if which == "params":
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save(prefix, 2, symbol, {"fc6_bias": mx.nd.ones(10)}, {})
        assert checkpoint.available_epochs(prefix) == [1]  # an epoch whose write was cut short does not exist


def momentum_arrays(path):
    """The SGD momentum arrays of a ``.states`` file (MXNet's pickled updater states), whatever their keys."""
    with open(path, "rb") as f:
        states = pickle.loads(f.read())
    states = states[0] if isinstance(states, tuple) else states
    return [value.asnumpy() for value in states.values() if value is not None]


def test_resume_continues_from_the_saved_weights_and_momentum(tmp_path, digits_rec, tiny_digits_run):
    """One epoch at learning rate 0 after --resume: without momentum the weights stay the checkpoint's, bit for
    bit; with momentum 0.9 each step adds 0.9 x the previous step, starting from the momentum saved with the
    checkpoint, so the epoch moves every weight by (0.9 + 0.9^2 + ... + 0.9^B) x its saved momentum. The changes of
    the checkpoint's recipe are asked for (--allow-recipe-change). The checkpoint: epoch 1 of the shared run
    (trained.py: batch 8, rate 0.1, the digits' augmentation)."""
    prefix = tmp_path / "tiny"
    copy_epoch(tiny_digits_run, 1, str(prefix))
    saved = checkpoint.load(str(prefix), 1).arg_params
    momenta = momentum_arrays(checkpoint.states_path(str(prefix), 1))
    steps = training.batches_per_epoch(data.num_records(digits_rec.train), 1, 8)
    for momentum, check in ((0, "kept"), (0.9, "moved")):
        done = run_train(train_command(digits_rec, prefix, "--batch-size", 8, "--num-epochs", 2, "--resume", 1,
                                       "--lr", 0, "--lr-steps", "", "--mom", momentum, "--allow-recipe-change",
                                       *DIGITS_AUG))
        assert done.returncode == 0, done.stderr
        assert "resuming from %s" % checkpoint.params_path(str(prefix), 1) in done.stdout
        resumed = checkpoint.load(str(prefix), 2).arg_params
        assert resumed.keys() == saved.keys()
        for name, before in saved.items():
            moved = resumed[name].asnumpy() - before.asnumpy()
            if check == "kept":
                assert not moved.any(), name
                continue
            expected = sum(0.9 ** k for k in range(1, steps + 1))
            scale = np.abs(moved).max()
            assert scale > 0, name
            assert any(m.shape == moved.shape and np.abs(moved - expected * m).max() <= 1e-3 * scale
                       for m in momenta), name


@pytest.mark.parametrize("options, message", [
    (["--data-train", "missing.rec"], "missing.rec: no such record file"),
    (["--num-classes", 5], "--num-classes 5 contradicts %s (10 classes)"),
    (["--network", "dpn93"], "unknown model 'dpn93'"),
    (["--resume", "3"], "-0003.params not found; no checkpoints exist under prefix"),
])
def test_bad_input_gives_one_line_errors(tmp_path, digits_rec, options, message):
    command = train_command(digits_rec, tmp_path / "bad", "--num-epochs", 1)
    for flag, value in zip(options[::2], options[1::2]):
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    done = run_train(command, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    message = message.replace("%s", str(digits_rec.out / "classes.txt"))
    assert message in last, done.stderr
    assert "Traceback" not in done.stderr


def test_make_train_over_ssh_with_a_hostfile(tmp_path, digits_rec, ssh_server, job_tag):
    """`make train NODES=2 HOSTS=...`: 2 workers + 2 servers through sshd on 127.0.0.1, as on a real cluster."""
    hosts = tmp_path / "hosts"
    hosts.write_text("# the test's sshd, twice: one worker and one server each\n%s\n%s\n"
                     % (ssh_server.address, ssh_server.address))
    prefix = tmp_path / job_tag / "tiny"
    options = ["--num-classes", 10, "--size", 32, "--data-train", digits_rec.train, "--data-val", digits_rec.val,
               "--batch-size", 16, "--num-epochs", 2, "--lr", 0.1, "--model-prefix", prefix] + DIGITS_AUG
    done = subprocess.run(["make", "--no-print-directory", "train", "NODES=2", "HOSTS=%s" % hosts,
                           "HOST_IP=127.0.0.1", "MODEL=%s" % TINY, "ARGS=%s" % " ".join(map(str, options))],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **ssh_server.env, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rank0, rank1 = summaries(done.stdout, 0), summaries(done.stdout, 1)
    assert [s["epoch"] for s in rank0] == [s["epoch"] for s in rank1] == [1, 2]
    assert [s["weights_sha1"] for s in rank0] == [s["weights_sha1"] for s in rank1]
    assert "[worker 1@%s]" % ssh_server.address in done.stdout
    assert checkpoint.available_epochs(str(prefix)) == [1, 2]


def test_benchmark_prints_a_speed_table_row():
    done = run_train(["python", "train/train_imagenet.py", "--network", TINY, "--num-classes", 10, "--size", 32,
                      "--batch-size", 4, "--benchmark", "--benchmark-batches", 3], timeout=120)
    assert done.returncode == 0, done.stderr
    header, rule, row = done.stdout.strip().splitlines()[-3:]
    assert header == "| model | batch/device | devices | kvstore | memory (MiB) | img/s |"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["dpn-custom", "4", "1 cpu", "local"]
    assert float(cells[4]) > 100 and float(cells[5]) > 0

"""Nothing lost, nothing silently half-used: one run per prefix, no silent overwrite, checkpoints that are whole sets
(a kill -9 at every step of a save, then --resume auto, ends bit-identical to the straight run), every record counted,
one-line errors for corrupt metadata, no restarts of failures that would recur, nothing left by failed commands, and
a recipe that holds every option deciding the result."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dpn_mxnet import checkpoint, data, run_lock
from dpn_mxnet.launcher.supervisor import INPUT_ERROR_STATUS
from dpn_mxnet.sample_photos import NAMES, sample_photo
from train import train_imagenet

from conftest import REPO
from datasets import break_image
from launch_helpers import run_launcher
from test_train import LAUNCH_2X1, TINY, run_train, train_command

RUN = ["--batch-size", 32, "--lr", 0.1, "--min-area", 0.5]  # 7 batches per epoch
# the metrics of an epoch that depend on the run's state (not on the clock)
STATE_METRICS = ("epoch", "train_top1", "train_top5", "train_cross-entropy", "weights_sha1", "state_sha1",
                 "learning_rate", "checkpoint")


def command(digits, prefix, *options):
    return train_command(digits, prefix, *RUN, *options)


def last_line(done):
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip().splitlines()[-1]


def snapshot(folder):
    """{name: bytes} of the checkpoint files in ``folder`` (the log aside: runs append to it)."""
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).iterdir())
            if p.is_file() and not p.name.endswith("-train.log")}


def state_metrics(prefix):
    return [{k: s.get(k) for k in STATE_METRICS} for s in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))]


@pytest.fixture(scope="module")
def straight(digits_rec, tmp_path_factory):
    """The prefix of a straight 3-epoch run."""
    prefix = tmp_path_factory.mktemp("straight") / "p"
    done = run_train(command(digits_rec, prefix, "--num-epochs", 3))
    assert done.returncode == 0, done.stderr[-3000:]
    return prefix


def copy_run(prefix, folder):
    """A copy of the run under ``prefix`` in ``folder``; returns its prefix."""
    shutil.copytree(prefix.parent, folder)
    return folder / prefix.name


# ---------------------------------------------------------------------------------------------------------------
# One run per prefix

def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    prefix = str(tmp_path / "p")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from dpn_mxnet import run_lock; "
                               "run_lock.RunLock(sys.argv[1]); print('held', flush=True); sys.stdin.read()", prefix],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        for attempt in (run_lock.check_free, run_lock.RunLock):
            with pytest.raises(run_lock.PrefixInUse) as refused:
                attempt(prefix)
            assert "pid %d, started " % holder.pid in str(refused.value)
            assert "--model-prefix %s: another training run is using it (run on " % prefix in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    lock = run_lock.RunLock(prefix)  # the kernel released the killed holder's lock
    assert "pid %d" % os.getpid() in open(run_lock.lock_path(prefix)).read()
    lock.release()
    assert os.listdir(tmp_path) == []


def test_a_second_run_on_the_prefix_is_refused_at_once(tmp_path, digits_rec):
    prefix = tmp_path / "p"
    first = subprocess.Popen([sys.executable, *map(str, command(digits_rec, prefix, "--num-epochs", 1000,
                                                               "--seed", 1)[1:])],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(checkpoint.params_path(str(prefix), 1)):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = run_train(command(digits_rec, prefix, "--num-epochs", 1000, "--seed", 2))
        assert first.poll() is None, "the first run ended before the second was refused: nothing was tested"
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert ("error: --model-prefix %s: another training run is using it (run on %s, pid %d, started "
            % (prefix, os.uname().nodename, first.pid)) in last_line(second)
    assert first.returncode == 130 and err.strip().splitlines()[-1] == "error: interrupted", err[-3000:]
    epochs = checkpoint.available_epochs(str(prefix))
    assert all(json.load(open(checkpoint.recipe_path(str(prefix), e)))["flags"]["seed"] == 1 for e in epochs)
    log = (tmp_path / "p-train.log").read_text()
    committed = [line["epoch"] for line in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))]
    logged = [json.loads(line.split("epoch-summary ", 1)[1])["epoch"] for line in log.splitlines()
              if "epoch-summary " in line]
    # the first run's epochs alone, each logged once it is committed (Ctrl-C may fall between the two)
    assert committed and logged == committed[:len(logged)] and len(logged) >= len(committed) - 1
    assert log.count(" INFO dpn-custom: 10 classes") == 1  # one run started
    assert not (tmp_path / "p.lock").exists()


# ---------------------------------------------------------------------------------------------------------------
# Never overwrite a run

def test_a_new_run_on_a_prefix_with_epochs_is_refused_unless_overwrite(tmp_path, digits_rec, straight):
    prefix = copy_run(straight, tmp_path / "run")
    before = snapshot(prefix.parent)
    again = run_train(command(digits_rec, prefix, "--num-epochs", 3))
    assert again.returncode == 2
    assert ("error: --model-prefix %s already holds epochs 1-3 of a run (newest %s-0003.params): give --resume auto "
            "to continue it, or another --model-prefix to start a new run (--overwrite deletes it)"
            % (prefix, prefix)) in last_line(again)
    assert snapshot(prefix.parent) == before

    over = run_train(command(digits_rec, prefix, "--num-epochs", 1, "--overwrite"))
    assert over.returncode == 0, over.stderr[-3000:]
    assert "WARNING --overwrite: deleted the 10 files of the run under %s" % prefix in over.stdout
    assert checkpoint.available_epochs(str(prefix)) == [1]
    assert not os.path.exists(checkpoint.params_path(str(prefix), 3))
    assert state_metrics(prefix) == state_metrics(straight)[:1]


def test_resume_auto_on_an_empty_prefix_starts_fresh(tmp_path, digits_rec, straight):
    prefix = tmp_path / "fresh" / "p"
    done = run_train(command(digits_rec, prefix, "--num-epochs", 1, "--resume", "auto"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert state_metrics(prefix) == state_metrics(straight)[:1]


# ---------------------------------------------------------------------------------------------------------------
# A checkpoint is a set or nothing

SAVE_STEPS = [(name, step) for name in ("p-0002.states", "p-0002.recipe.json", "p-0002.params", "p-metrics.jsonl")
              for step in ("written", "renamed")]


def test_kill_at_every_step_of_a_save_then_resume_ends_as_the_straight_run(tmp_path, digits_rec, straight):
    prefix = tmp_path / "p"
    done = run_train(command(digits_rec, prefix, "--num-epochs", 1))
    assert done.returncode == 0, done.stderr[-3000:]
    first = snapshot(tmp_path)
    left = []  # the files of epoch 2 that the last killed save left: the next start removes them
    for name, step in SAVE_STEPS:
        # the metrics file is written when the run starts, and once more by the save of epoch 2
        target = "%s:%s%s" % (name, step, ":2" if name == "p-metrics.jsonl" else "")
        killed = subprocess.run([sys.executable, *map(str, command(digits_rec, prefix, "--num-epochs", 2, "--resume",
                                                                   "auto")[1:])], cwd=REPO, capture_output=True,
                                text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1",
                                                                 **{checkpoint.KILL_AT_ENV: target}))
        assert killed.returncode == -signal.SIGKILL, (target, killed.stderr[-3000:])
        if left:
            assert "removed the files of epoch 2, whose save did not finish: %s" % ", ".join(left) in killed.stdout
        now = snapshot(tmp_path)
        committed = (name, step) == SAVE_STEPS[-1]
        earlier = [n for n in first if not (committed and n == "p-metrics.jsonl")]  # the commit adds a line
        assert {n: now[n] for n in earlier} == {n: first[n] for n in earlier}, target  # as they were
        assert checkpoint.available_epochs(str(prefix)) == ([1, 2] if committed else [1]), target
        assert [s["epoch"] for s in checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))] == \
            ([1, 2] if committed else [1]), target
        left = sorted(str(p) for p in tmp_path.glob("p-0002.*") if ".tmp-" not in p.name)
        renamed = [n for n, _ in SAVE_STEPS[:SAVE_STEPS.index((name, step)) + 1:2]]
        expected = renamed[:len(renamed) - (step == "written")]  # the files of the set renamed into place
        assert [os.path.basename(p) for p in left] == sorted(n for n in expected if n != "p-metrics.jsonl"), target
    done = run_train(command(digits_rec, prefix, "--num-epochs", 3, "--resume", "auto"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from %s" % checkpoint.params_path(str(prefix), 2) in done.stdout
    assert snapshot(tmp_path) == {n: b for n, b in snapshot(straight.parent).items() if n != "p-metrics.jsonl"} | {
        "p-metrics.jsonl": (tmp_path / "p-metrics.jsonl").read_bytes()}
    assert state_metrics(prefix) == state_metrics(straight)


@pytest.mark.parametrize("damage", ["deleted", "cut short"])
def test_resume_auto_passes_over_an_epoch_whose_states_are_lost(tmp_path, digits_rec, straight, damage):
    prefix = copy_run(straight, tmp_path / "run")
    states = checkpoint.states_path(str(prefix), 3)
    size = os.path.getsize(states)
    if damage == "deleted":
        os.remove(states)
        why = "%s is missing" % states
    else:
        os.truncate(states, size // 2)
        why = "%s has %d bytes, not the %d it was saved with" % (states, size // 2, size)
    before = snapshot(prefix.parent)
    refused = run_train(["python", "train/train_imagenet.py", "--model-prefix", prefix, "--resume", 3,
                         "--num-epochs", 3])
    assert refused.returncode == 2
    assert ("--resume 3: cannot continue epoch 3 with its momentum: %s; give --allow-momentum-reset to resume it "
            "with momentum zero" % why) in last_line(refused)
    assert snapshot(prefix.parent) == before

    done = run_train(["python", "train/train_imagenet.py", "--model-prefix", prefix, "--resume", "auto",
                      "--num-epochs", 3])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--resume auto: skipping epoch 3: %s" % why in done.stdout
    assert "resuming from %s" % checkpoint.params_path(str(prefix), 2) in done.stdout
    assert snapshot(prefix.parent) == snapshot(straight.parent) | {
        "p-metrics.jsonl": (prefix.parent / "p-metrics.jsonl").read_bytes()}
    assert state_metrics(prefix) == state_metrics(straight)


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_leaves_no_part_of_the_failed_epoch(digits_rec, straight, small_disk):
    pages = {path.name: -(-path.stat().st_size // 4096) * 4096 for path in straight.parent.iterdir()}
    epoch = sum(pages["p-0001.%s" % kind] for kind in ("params", "states", "recipe.json"))
    # files, the log and a metrics file being rewritten, the symbol's temporary copy, and of epoch 3 all but half
    # the parameters
    room = (pages["p-model.json"] + 2 * pages["p-metrics.jsonl"] + 16384 + 2 * pages["p-symbol.json"] + 2 * epoch
            + pages["p-0001.states"] + pages["p-0001.recipe.json"] + pages["p-0001.params"] // 2)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % room, "tmpfs", str(small_disk)], check=True)
    prefix = small_disk / "p"
    done = run_train(command(digits_rec, prefix, "--num-epochs", 3))
    assert done.returncode == 1
    assert "%s-0003.params: cannot write it" % prefix in last_line(done)
    assert sorted(name for name in os.listdir(small_disk) if "-0003" in name or ".tmp-" in name) == []
    assert checkpoint.available_epochs(str(prefix)) == [1, 2]
    assert state_metrics(prefix) == state_metrics(straight)[:2]
    for name in ("p-0001.params", "p-0002.states", "p-0002.recipe.json"):
        assert (small_disk / name).read_bytes() == (straight.parent / name).read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# Every record counted

def test_an_index_that_lists_half_the_records_is_refused(tmp_path, digits_rec):
    half = tmp_path / "half"
    half.mkdir()
    for suffix in (".rec", ".lst"):
        shutil.copyfile(digits_rec.val.with_suffix(suffix), half / ("val" + suffix))
    lines = digits_rec.val.with_suffix(".idx").read_text().splitlines(keepends=True)
    (half / "val.idx").write_text("".join(lines[:30]))
    message = "%s holds 60 records but its index %s lists 30" % (half / "val.rec", half / "val.idx")
    with pytest.raises(data.DataError, match="^" + message):
        data.check_rec(half / "val.rec", 10)
    done = run_train(command(digits_rec, tmp_path / "p", "--num-epochs", 1, "--data-train", half / "val.rec"))
    assert done.returncode == INPUT_ERROR_STATUS and "error: " + message in last_line(done)
    assert not (tmp_path / "p-train.log").exists()


# ---------------------------------------------------------------------------------------------------------------
# Corrupt metadata is one line

def garble(path):
    """Overwrite the second half of a text file with '#' (its size stays: the checkpoint set stays whole)."""
    text = pathlib.Path(path).read_text()
    pathlib.Path(path).write_text(text[:len(text) // 2] + "#" * (len(text) - len(text) // 2))


@pytest.mark.parametrize("which", ["model", "metrics", "recipe"])
def test_corrupt_run_metadata_is_one_line(tmp_path, digits_rec, straight, which):
    prefix = copy_run(straight, tmp_path / "run")
    path = {"model": checkpoint.model_path, "metrics": checkpoint.metrics_path,
            "recipe": lambda p: checkpoint.recipe_path(p, 3)}[which](str(prefix))
    garble(path)
    if which == "model":
        done = run_train(["python", "test/score.py", "--model-prefix", prefix, "--load-epoch", 3, "--data-val",
                          digits_rec.val, "--size", 32, "--batch-size", 8])
        assert done.returncode == 1
        expected = "%s: not a readable model description (" % path
    else:
        done = run_train(["python", "train/train_imagenet.py", "--model-prefix", prefix, "--resume", "auto",
                          "--num-epochs", 4])
        assert done.returncode == 2
        expected = {"metrics": "%s line 2: not a JSON epoch summary (" % path,
                    "recipe": "%s: not a JSON recipe (" % path}[which]
    assert expected in last_line(done) and len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_corrupt_class_index_and_hostfile_are_one_line(tmp_path, straight):
    binary = tmp_path / "binary"
    binary.write_bytes(b"n01440764\n\xff\xfe\x00garbage\n")
    done = run_train(["python", "tools/predict.py", "--model-prefix", straight, "--load-epoch", 3, "--classes", binary,
                      sample_photo(NAMES[0])])
    assert done.returncode != 0 and "%s: not a text class index (byte 10 is not utf-8)" % binary in last_line(done)
    launched = run_launcher(["--launcher", "ssh", "-n", 1, "-s", 1, "-H", binary, "python", "-c", "pass"])
    assert launched.returncode == 2
    assert last_line(launched) == "launch.py: error: hostfile %s: not a text file (byte 10 is not utf-8)" % binary


# ---------------------------------------------------------------------------------------------------------------
# Restarts are for transient faults

def test_a_failure_that_would_recur_is_not_restarted(tmp_path, digits_rec, job_tag):
    rec, _, _ = break_image(digits_rec.train, tmp_path / "broken", 7)
    run = run_launcher(["--max-restarts", 2] + LAUNCH_2X1 + command(
        digits_rec, tmp_path / job_tag / "p", "--data-train", rec, "--kv-store", "dist_sync", "--num-epochs", 2),
        timeout=240)
    assert run.returncode == 1
    assert not any(line.startswith("launch.py: restart") for line in run.stderr_lines), run.report("restarted")
    assert "failed: exit code %d: error: worker rank 0 of 2" % INPUT_ERROR_STATUS in run.stderr
    assert last_line(run) == ("launch.py: not restarted: the failure above is an error in its input or "
                              "configuration, which a restart would meet again")


def test_when_restarts_run_out_the_last_line_says_so(job_tag):
    run = run_launcher(["--max-restarts", 1, "-n", 1, "-s", 1, "--launcher", "local", "--host-ip", "127.0.0.1",
                        "python", "-c", "import os, time; os.environ['DMLC_ROLE'] == 'worker' and exit(1); "
                        "time.sleep(60)", job_tag],
                       timeout=120)
    assert run.returncode == 1
    assert "launch.py: restart 1 of 1: relaunching the job with --resume auto\n" in run.stderr_lines
    assert last_line(run).startswith("launch.py: restarts used up (1 of 1); the last failure: worker ")


# ---------------------------------------------------------------------------------------------------------------
# A run that has nothing to do says so; failed commands leave nothing behind

def test_a_run_with_nothing_to_do_says_so(tmp_path, digits_rec, straight):
    prefix = copy_run(straight, tmp_path / "run")
    before = snapshot(prefix.parent)
    done = run_train(command(digits_rec, prefix, "--num-epochs", 2, "--resume", "auto"))
    assert done.returncode == 0
    assert last_line(done) == ("train_imagenet.py: nothing to do: %s-0003 is saved and --num-epochs is 2 (give a "
                               "larger --num-epochs to train on)" % prefix)
    assert snapshot(prefix.parent) == before


def test_failed_commands_leave_nothing_behind(tmp_path, digits_rec):
    done = run_train(command(digits_rec, tmp_path / "new" / "deeper" / "p", "--num-epochs", 1, "--data-train",
                             tmp_path / "missing.rec"))
    assert done.returncode == INPUT_ERROR_STATUS and "missing.rec: no such record file" in last_line(done)
    assert os.listdir(tmp_path) == []

    images = tmp_path / "images" / "train" / "n01440764"
    images.mkdir(parents=True)
    (images / "x.JPEG").write_bytes(b"not an image")
    for out, kept in ((tmp_path / "out", []), (tmp_path / "images", ["train"])):
        made = run_train(["python", "tools/make_rec.py", tmp_path / "images", out, "--num-thread", 1])
        assert made.returncode == 2 and "1 unreadable image file(s)" in last_line(made)
        assert sorted(os.listdir(out)) == kept if out.exists() else kept == []


# ---------------------------------------------------------------------------------------------------------------
# The recipe holds every option that decides the result

# options of the model, data and training groups that do not decide the result
NOT_RESULT = {"data_nthreads", "gpus", "num_epochs"}


def other_value(action, saved):
    """Command-line words for ``action`` with a value other than ``saved`` (and its default)."""
    flag = action.option_strings[0]
    if action.nargs == 0:
        assert saved is False, flag
        return [flag]
    if action.choices:
        return [flag, next(c for c in action.choices if c not in (saved, action.default))]
    if action.nargs:
        return [flag] + [str(value + 1) for value in saved]
    if action.type in (int, float):
        return [flag, str((saved or 0) + 1)]
    return [flag, "%s-other" % (saved or "x") if not isinstance(saved, list) else "7"]


def test_every_option_that_decides_the_result_is_saved_and_guarded(tmp_path, straight, capsys):
    parser = train_imagenet.build_parser()
    deciding = {a.dest for g in parser._action_groups if g.title in ("model", "data", "training")
                for a in g._group_actions} - NOT_RESULT | {"pretrained"}
    recipe = json.load(open(checkpoint.recipe_path(str(straight), 3)))
    assert set(recipe["flags"]) == deciding
    prefix = copy_run(straight, tmp_path / "run")
    before = snapshot(prefix.parent)
    actions = {a.dest: a for a in parser._actions}
    for name in sorted(deciding):
        words = other_value(actions[name], recipe["flags"][name])
        with pytest.raises(SystemExit) as ended:
            train_imagenet.parse_args(["--model-prefix", str(prefix), "--resume", "auto", "--num-epochs", "4"] + words)
        assert ended.value.code == 2, words
        err = capsys.readouterr().err
        assert "error: %s " % words[0] in err and " conflicts with the recipe of %s-0003 (" % prefix in err, err
    assert snapshot(prefix.parent) == before

"""Failures end cleanly: a failing worker stops its dist_sync job, undecodable records are named (or skipped and
counted) by every reader, jobs started together never collide, a wrong --pretrained file and every misuse give
one line before any work, and nothing is left running when part of the launcher chain dies."""
import ast
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

import symbols
from tools import export_onnx, make_rec, refine_bn
from dpn_mxnet import checkpoint, cli, data, packing, training_data
from train import train_imagenet

from checkpoints import msra_params
from conftest import REPO
from datasets import break_image
from launch_helpers import LauncherRun, job_processes, new_tag
from test_launch import JOB, WORKER
from test_train import LAUNCH_2X1, TINY, run_train, train_command

TIMEOUT = 120


def run(script, *args, timeout=TIMEOUT):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


def last_line(done):
    """The last line on stderr, after checking that the run failed with status 1 and printed no traceback."""
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def undecodable(rec, record_id, offset):
    source = [line.rstrip("\n").split("\t")[-1] for line in open(pathlib.Path(rec).with_suffix(".lst"))
              if line.split("\t")[0] == str(record_id)][0]
    return ("%s: record id %d (byte %d, source file %s from the .lst beside it) is not a decodable image"
            % (rec, record_id, offset, source))


def break_png_body(rec, out, position):
    """Like ``break_image`` but the image keeps its PNG signature and header: only its pixel data is destroyed, so
    that the record check passes and the image fails when it is decoded."""
    copy, record_id, offset = break_image(rec, out, position)
    blob = bytearray(pathlib.Path(rec).read_bytes())  # the intact bytes, then the body broken instead
    flag = struct.unpack_from("I", blob, offset + 8)[0]
    image = offset + 8 + 24 + 4 * flag
    idat = blob.index(b"IDAT", image)
    blob[idat + 6:idat + 46] = bytes(40)
    copy.write_bytes(bytes(blob))
    return copy, record_id, offset


@pytest.fixture(scope="module")
def broken(digits_rec, tmp_path_factory):
    """{name: (.rec, record id, byte offset)}: digit sets with one record whose image signature is destroyed
    ("val", "train") or whose PNG pixel data is ("train body", a record in the second worker's shard)."""
    folder = tmp_path_factory.mktemp("broken")
    return {"val": break_image(digits_rec.val, folder / "val", 5),
            "train": break_image(digits_rec.train, folder / "train", 7),
            "train body": break_png_body(digits_rec.train, folder / "body", data.num_records(digits_rec.train) - 9)}


@pytest.fixture(scope="module")
def tiny_prefix(tmp_path_factory):
    """A checkpoint of the tiny DPN (random MSRA weights) with its model description, trained size 32."""
    symbol = symbols.get_symbol(TINY, 10, image_size=32)
    args, aux = msra_params(symbol)
    prefix = str(tmp_path_factory.mktemp("tiny") / "tiny")
    checkpoint.save(prefix, 1, symbol, args, aux)
    checkpoint.save_model_info(prefix, {"network": TINY, "num_classes": 10, "classifier": "fc6", "image_size": 32})
    return prefix


def _mount_tmpfs(folder, options):
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                           capture_output=True).returncode:
        return False
    return True


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written to: a read-only tmpfs where mount works (root ignores permissions), else
    a folder without write permission."""
    folder = tmp_path / "read-only"
    mounted = _mount_tmpfs(folder, "ro,size=64k")
    if not mounted:
        folder.chmod(0o555)
    yield folder
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs: room for the model description and the log, not for a checkpoint."""
    folder = tmp_path / "tiny-disk"
    if not _mount_tmpfs(folder, "size=96k"):
        pytest.skip("mounting a tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


# ---------------------------------------------------------------------------------------------------------------
# A Python error on one worker of a dist_sync job

def failure_lines(run_):
    return [line for line in run_.stderr_lines if line.startswith("launch.py: ")]


def test_undecodable_image_in_a_worker_shard_stops_the_job(tmp_path, digits_rec, broken, job_tag):
    """--aug fork decodes in Python: the second worker meets the record mid-epoch (its signature passes the
    check); it must end at once instead of waiting forever in the kvstore's destructor."""
    rec, record_id, offset = broken["train body"]
    run_ = LauncherRun(LAUNCH_2X1 + train_command(digits_rec, tmp_path / job_tag / "tiny", "--data-train", rec,
                                                   "--kv-store", "dist_sync", "--batch-size", 8, "--num-epochs", 2,
                                                   "--aug", "fork"))
    run_.wait_for(r"error: worker rank 1 ", timeout=TIMEOUT)
    failed = time.monotonic()
    assert run_.finish(60) == 1, run_.report("expected exit status 1")
    assert time.monotonic() - failed < 30, run_.report("the job took too long to stop")
    lines = failure_lines(run_)
    assert len(lines) == 1, run_.report("expected one failure line")
    assert lines[0].startswith("launch.py: worker rank 1 on 127.0.0.1 failed: exit code 1: error: worker rank 1 "
                               "of 2 on 127.0.0.1: %s;" % undecodable(rec, record_id, offset)), lines[0]
    assert "Traceback" not in run_.stderr


def test_full_disk_at_a_checkpoint_stops_the_job(digits_rec, tiny_disk, job_tag):
    prefix = tiny_disk / ("tiny" + job_tag)
    run_ = LauncherRun(LAUNCH_2X1 + train_command(digits_rec, prefix, "--kv-store", "dist_sync", "--batch-size", 8,
                                                   "--num-epochs", 2))
    run_.wait_for(r"error: worker rank 0 ", timeout=TIMEOUT)
    failed = time.monotonic()
    assert run_.finish(60) == 1, run_.report("expected exit status 1")
    assert time.monotonic() - failed < 30
    lines = failure_lines(run_)
    assert len(lines) == 1, run_.report("expected one failure line")
    assert "worker rank 0 on 127.0.0.1 failed: exit code 1: error: worker rank 0 of 2 on 127.0.0.1: " in lines[0]
    assert "%s-0001." % prefix in lines[0] and "No space left on device" in lines[0], lines[0]
    assert not any(name.endswith(".params") or ".tmp-" in name for name in os.listdir(tiny_disk))


# ---------------------------------------------------------------------------------------------------------------
# Undecodable records: named by every reader, or skipped and counted

@pytest.mark.parametrize("tool", ["score", "refine_bn", "train"])
def test_undecodable_record_is_named(tool, tiny_prefix, digits_rec, broken, tmp_path):
    rec, record_id, offset = broken["train" if tool == "train" else "val"]
    if tool == "score":
        done = run("test/score.py", "--model-prefix", tiny_prefix, "--load-epoch", 1, "--data-val", rec, "--size", 32)
    elif tool == "refine_bn":
        done = run("tools/refine_bn.py", "--model-prefix", tiny_prefix, "--load-epoch", 1, "--data-train", rec, "--batches", 2,
                   "--batch-size", 8, "--out-prefix", tmp_path / "refined")
    else:
        done = run_train(train_command(digits_rec, tmp_path / "tiny", "--data-train", rec, "--batch-size", 8,
                                       "--num-epochs", 1), timeout=TIMEOUT)
    assert last_line(done) == "error: " + undecodable(rec, record_id, offset)


def test_python_decoders_name_the_record(broken):
    """The fork augmentation and 10-crop decode in Python; a record that fails there is named the same way."""
    rec, record_id, offset = broken["train body"]
    batches = training_data.train_iter(rec, 20, 32, threads=1, aug="fork")
    with pytest.raises(data.DataError) as error:
        for _ in batches:
            pass
    assert str(error.value) == undecodable(rec, record_id, offset)
    rec, record_id, offset = broken["val"]
    with pytest.raises(data.DataError) as error:
        for _ in data.ten_crop_iter(rec, 4, 32, 36):
            pass
    assert str(error.value) == undecodable(rec, record_id, offset)


def test_skipped_records_are_left_out_and_counted(tiny_prefix, broken, digits_rec):
    rec, record_id, offset = broken["val"]
    done = run("test/score.py", "--model-prefix", tiny_prefix, "--load-epoch", 1, "--data-val", rec, "--size", 32,
               "--bad-records", "skip", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["images"] == data.num_records(digits_rec.val) - 1
    assert "skipping " + undecodable(rec, record_id, offset) in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("skipped 1 undecodable records of %s" % rec)


def test_training_skips_bad_records_and_cleans_stale_temporaries(tmp_path, digits_rec, broken):
    rec, record_id, offset = broken["train"]
    prefix = tmp_path / "tiny"
    stale = tmp_path / ("tiny-0001.params.tmp-%d" % _dead_pid())
    stale.write_bytes(b"half a checkpoint")
    done = run_train(train_command(digits_rec, prefix, "--data-train", rec, "--batch-size", 8, "--num-epochs", 1,
                                   "--bad-records", "skip"), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipping " + undecodable(rec, record_id, offset) in done.stdout
    assert "skipped 1 undecodable records" in done.stdout
    assert "removed 1 temporary files of interrupted checkpoint writes" in done.stdout
    assert not stale.exists() and checkpoint.available_epochs(str(prefix)) == [1]


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    prefix = str(tmp_path / "m")
    dead, live = prefix + "-0002.params.tmp-%d" % _dead_pid(), prefix + "-0002.states.tmp-%d" % os.getpid()
    for path in (dead, live, prefix + "-0001.params"):
        pathlib.Path(path).write_bytes(b"x")
    assert checkpoint.remove_stale_temporaries(prefix) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (live, prefix + "-0001.params"))


def test_predict_names_or_skips_undecodable_files(tiny_prefix, tmp_path):
    import cv2
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    cv2.imwrite(str(good), np.random.RandomState(0).randint(0, 255, (40, 40, 3)).astype(np.uint8))
    bad.write_bytes(b"\0" * 8 + good.read_bytes()[8:])
    options = ["--model-prefix", tiny_prefix, "--load-epoch", 1, "--json", "--batch-size", 1]
    assert last_line(run("tools/predict.py", *options, good, bad)) == (
        "error: %s: not an image MXNet can decode (JPEG, PNG, BMP, ...)" % bad)
    done = run("tools/predict.py", *options, "--bad-records", "skip", bad, good)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["image"] for line in done.stdout.splitlines()] == [str(good)]
    assert done.stderr.strip().splitlines()[-1].startswith("skipped 1 undecodable image files")


def test_make_rec_refuses_an_image_it_cannot_decode(tmp_path):
    import cv2
    folder = tmp_path / "data" / "train" / "n01440764"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "good.png"), np.full((40, 40, 3), 128, np.uint8))
    blob = bytearray((folder / "good.png").read_bytes())
    idat = blob.index(b"IDAT")
    blob[idat + 6:idat + 46] = bytes(40)  # header intact (Pillow opens it), pixels destroyed
    (folder / "broken.png").write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match=r"1 unreadable image file\(s\) \(OpenCV cannot decode them\): "
                                             r"n01440764/broken.png$"):
        packing.make_rec(tmp_path / "data", tmp_path / "out", packing.IMAGENET_CLASSES, threads=1)
    assert not (tmp_path / "out" / "train.rec").exists()


def test_record_signatures_of_every_format_opencv_writes(tmp_path):
    import cv2
    image = np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".jp2", ".ras", ".hdr", ".pfm"):
        pixels = {".hdr": image.astype(np.float32) / 255, ".pfm": image.astype(np.float32) / 255,
                  ".pgm": image[:, :, 0]}.get(ext, image)
        ok, encoded = cv2.imencode(ext, pixels)
        assert ok and data.is_image_signature(encoded.tobytes()[:data.SIGNATURE_BYTES]), ext
    assert not data.is_image_signature(b"<html>not an")
    assert not data.is_image_signature(bytes(12))


# ---------------------------------------------------------------------------------------------------------------
# Jobs started together, and what is left when the launcher chain breaks

def test_jobs_started_together_both_finish(tmp_path):
    """The second job starts while the first one's scheduler is still importing MXNet, three times over."""
    tags = []
    try:
        for attempt in range(3):
            runs = []
            for job in range(2):
                out = tmp_path / ("%d-%d" % (attempt, job))
                out.mkdir()
                tags.append(new_tag())
                runs.append((out, LauncherRun(JOB + ["--launcher", "local", "python", WORKER, "--out", out,
                                                     "--steps", 2, "--tag", tags[-1]])))
                time.sleep(1.5)
            ports = set()
            for out, launched in runs:
                assert launched.finish(TIMEOUT) == 0, launched.report("a job started beside another one failed")
                results = [json.loads((out / ("rank-%d.json" % rank)).read_text()) for rank in (0, 1)]
                ports |= {result["env"]["DMLC_PS_ROOT_PORT"] for result in results}
            assert len(ports) == 2, "the two jobs shared a scheduler port: %s" % ports
    finally:
        assert not [p for tag in tags for p in job_processes(tag)]


def test_killed_guard_leaves_no_process(tmp_path, job_tag):
    launched = LauncherRun(JOB + ["--launcher", "local", "python", WORKER, "--out", tmp_path, "--steps", 100000,
                                  "--pause", 0.05, "--tag", job_tag])
    worker = launched.worker_pid(1)
    launched.wait_for(r"\[worker 1@\S+\] step 2 done")
    guard = int(pathlib.Path("/proc/%d/stat" % worker).read_text().rsplit(")", 1)[1].split()[1])
    assert "remote_guard" in pathlib.Path("/proc/%d/cmdline" % guard).read_text()
    os.kill(guard, signal.SIGKILL)
    assert launched.finish(60) == 1, launched.report("expected exit status 1")
    assert len(failure_lines(launched)) == 1 and "worker rank 1 on 127.0.0.1 failed" in failure_lines(launched)[0]
    deadline = time.monotonic() + 5
    while job_processes(job_tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not job_processes(job_tag), "the worker outlived its guard"


# ---------------------------------------------------------------------------------------------------------------
# A wrong --pretrained file; misuse

def test_pretrained_file_of_another_network_is_refused(tmp_path, digits_rec):
    released = str(tmp_path / "dpn68")
    graph = symbols.get_symbol("dpn68", 1000)
    checkpoint.save(released, 0, graph, *msra_params(graph))
    done = run_train(train_command(digits_rec, tmp_path / "tiny", "--num-epochs", 1, "--pretrained",
                                   checkpoint.params_path(released, 0)), timeout=TIMEOUT)
    line = last_line(done)
    assert line.startswith("error: --pretrained %s: fits " % checkpoint.params_path(released, 0)), line
    assert line.endswith("feature tensors of dpn-custom (e.g. conv1_x_1__conv_weight is missing or of another "
                         "shape); its tensors are those of dpn68 with 1000 classes (classifier fc6)"), line
    assert not checkpoint.available_epochs(str(tmp_path / "tiny"))


def one_line_exit(main, argv, capsys):
    """(exit status, the one line printed) of ``main(argv)``, which must exit 1 or 2 with one line, no traceback."""
    with pytest.raises(SystemExit) as end:
        main(argv)
    code, err = end.value.code, capsys.readouterr().err
    status, message = (1, code) if isinstance(code, str) else (code, err)
    lines = message.strip().splitlines()
    assert status in (1, 2) and len(lines) == 1 and "Traceback" not in message, (status, message)
    return status, lines[0]


@pytest.mark.parametrize("options, status, message", [
    (["--gpus", "0"], 2, "--gpus 0: this MXNet has no CUDA support (CPU build)"),
    (["--dtype", "float16"], 2, "--dtype float16 needs GPUs"),
    (["--kv-store", "dist_sync"], 2, "--kv-store dist_sync: not started by tools/launch.py (DMLC_ROLE not set)"),
    (["--lr", "-1"], 2, "--lr must be a finite number >= 0, got -1.0"),
    (["--lr", "nan"], 2, "--lr must be a finite number >= 0, got nan"),
    (["--lr", "inf"], 2, "--lr must be a finite number >= 0, got inf"),
    (["--batch-size", "0"], 2, "--batch-size, --num-epochs and --save-period must be positive"),
    (["--model", "dpn93"], 2, "unrecognized arguments: --model dpn93"),
    (["--model-prefix", "{read_only}/tiny"], 1, "--model-prefix: cannot write in {read_only}"),
])
def test_training_misuse_gives_one_line(options, status, message, digits_rec, tmp_path, read_only_folder, capsys):
    if "CUDA" in message and mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("a CUDA build")
    argv = [str(a) for a in train_command(digits_rec, tmp_path / "m", *[o.format(read_only=read_only_folder)
                                                                          for o in options])[2:]]
    got_status, line = one_line_exit(train_imagenet.parse_args, argv, capsys)
    assert got_status == status and message.format(read_only=read_only_folder) in line, line


def test_record_files_that_are_not_what_they_claim(digits_rec, tmp_path):
    with pytest.raises(data.DataError, match="train.lst: not a RecordIO file"):
        data.check_rec(digits_rec.train.with_suffix(".lst"))
    (tmp_path / "train.rec").symlink_to(digits_rec.train)
    (tmp_path / "train.idx").symlink_to(digits_rec.val.with_suffix(".idx"))  # the index of another .rec
    with pytest.raises(data.DataError, match=r"train.rec: corrupt: no record starts at byte \d+ \(listed in "
                                             r"train.idx; is it the index of another .rec\?\)"):
        data.check_rec(tmp_path / "train.rec")
    done = run_train(train_command(digits_rec, tmp_path / "m", "--data-train", digits_rec.train.with_suffix(".lst")))
    assert last_line(done).startswith("error: %s: not a RecordIO file" % digits_rec.train.with_suffix(".lst"))


def test_output_folders_are_checked_before_any_work(tiny_prefix, digits_rec, tmp_path, read_only_folder, capsys):
    missing = tmp_path / "missing"
    cases = [
        (export_onnx.main, ["--model-prefix", tiny_prefix, "--load-epoch", "1", "-o", str(missing / "m.onnx")],
         "error: -o/--out: %s is not an existing folder" % missing),
        (export_onnx.main, ["--model-prefix", tiny_prefix, "--load-epoch", "1", "-o", str(read_only_folder / "m.onnx")],
         "error: -o/--out: cannot write in %s" % read_only_folder),
        (export_onnx.main, ["--model-prefix", tiny_prefix, "-o", "m.onnx", "--batch-size", "0"],
         "--batch-size must be positive, got 0"),
        # the checkpoint does not exist: the output folder is checked first, before anything is computed
        (refine_bn.main, ["--model-prefix", str(missing / "m"), "--load-epoch", "1", "--data-train", str(digits_rec.val),
                          "--out-prefix", str(read_only_folder / "refined")],
         "error: --out-prefix: cannot write in %s" % read_only_folder),
        (make_rec.main, [str(tmp_path), str(read_only_folder / "rec")],
         "error: output folder: cannot create the folder %s" % (read_only_folder / "rec")),
    ]
    for main, argv, message in cases:
        _, line = one_line_exit(main, argv, capsys)
        assert message in line, (argv, line)


def test_every_entry_point_refuses_abbreviated_flags():
    parser = cli.ArgumentParser(prog="x")
    parser.add_argument("--model-prefix")
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m"])
    sources = [p for folder in ("train", "test", "tools") for p in (REPO / folder).rglob("*.py")]
    parsers = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                assert ast.unparse(node.func) == "cli.ArgumentParser", "%s builds %s" % (path, ast.unparse(node.func))
                parsers += 1
    assert parsers >= 15


def test_cxx_check_failures_are_described_in_one_line():
    from dpn_mxnet.checks import describe_error
    with pytest.raises(mx.base.MXNetError) as error:
        mx.nd.save("/nonexistent-folder/x.params", {"x": mx.nd.ones(1)})
    assert describe_error(error.value) == ('LocalFileSystem: Check failed: allow_null: :Open '
                                           '"/nonexistent-folder/x.params": No such file or directory')

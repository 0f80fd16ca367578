"""A job that stops making progress ends (tools/launch.py --stall-timeout): a frozen worker, server or scheduler, a
worker cut off by tc inside a network namespace the test creates, a scheduler frozen after the last epoch; no false
alarm while rank 0 validates for a long time; a restart after a stall ends bit-identical to the straight run.

Every job: the tiny DPN on the digits .rec, 2 workers and 1 server on 127.0.0.1, stall timeout ``STALL`` s."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from dpn_mxnet import checkpoint
from launch_helpers import LauncherRun, job_processes, run_launcher
from test_train import LAUNCH_2X1, summaries, train_command

STALL = 10
STOPPING = r"launch\.py: (.*); stopping the job \(4 processes\)"


def start_job(digits_rec, prefix, epochs, *options, env=None, prefix_command=(), launcher_options=()):
    return LauncherRun(["--stall-timeout", STALL, *launcher_options] + LAUNCH_2X1 + train_command(
        digits_rec, prefix, "--kv-store", "dist_sync", "--batch-size", 8, "--num-epochs", epochs, *options),
        env=env, prefix_command=prefix_command)


def role_pid(tag, role):
    """The pid of the job's process of ``role`` (the command itself, not its remote_guard)."""
    for pid, line in job_processes(tag):
        if "remote_guard" in line or "train_imagenet.py" not in line:
            continue
        try:
            environ = pathlib.Path("/proc/%d/environ" % pid).read_bytes().split(b"\0")
        except OSError:
            continue
        if ("DMLC_ROLE=%s" % role).encode() in environ:
            return pid
    pytest.fail("no %s process found" % role)


def launcher_lines(run_):
    return [line.strip() for line in run_.stderr_lines if line.startswith("launch.py: ")]


def the_stop_line(run_, since, limit):
    """The one line that stopped the job, printed within ``limit`` s of ``since``, then exit status 1."""
    match = run_.wait_for(STOPPING, timeout=limit + 30)
    elapsed = time.monotonic() - since
    assert run_.finish(60) == 1, run_.report("expected exit status 1")
    assert elapsed <= limit, run_.report("the job took %.0f s to stop" % elapsed)
    assert len(launcher_lines(run_)) == 1, run_.report("expected one line from the launcher")
    print("stopped %.1f s after the fault: %s" % (elapsed, match.group(0)))  # for docs/failures.md (pytest -s)
    return match.group(1)


def assert_checkpoints_intact(prefix):
    epochs = checkpoint.available_epochs(str(prefix))
    for epoch in epochs:
        checkpoint.load(str(prefix), epoch)
    assert not list(pathlib.Path(prefix).parent.glob("*.tmp-*"))
    return epochs


def freeze(pid):
    os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


def in_epoch_2(run_, rank=1):
    run_.wait_for(r"\[worker %d@\S+\] .*Epoch\[2\] Batch \[0-5\]" % rank, timeout=240)


@pytest.mark.parametrize("value", ["2", "-1", "nan"])
def test_a_stall_timeout_too_short_is_refused(value, tmp_path):
    run_ = run_launcher(["--stall-timeout", value] + LAUNCH_2X1 + ["python", "train/train_imagenet.py"], timeout=60)
    assert run_.returncode == 2 and not run_.stdout
    assert run_.stderr == "launch.py: error: --stall-timeout must be 0 or at least 5 s, got %s\n" % value, run_.stderr


@pytest.mark.parametrize("role", ["worker", "server", "scheduler"])
def test_a_frozen_process_ends_the_job(role, tmp_path, digits_rec, job_tag):
    """Frozen in epoch 2 (of many more than the test waits for). A frozen scheduler does not hold the workers up
    (they need it only at the end); it is named once it has been stopped for the stall timeout."""
    prefix = tmp_path / job_tag / "tiny"
    run_ = start_job(digits_rec, prefix, 1000)
    pid = run_.worker_pid(1) if role == "worker" else None
    in_epoch_2(run_)
    frozen = freeze(pid or role_pid(job_tag, role))
    name = "worker rank 1" if role == "worker" else role
    line = the_stop_line(run_, frozen, STALL + 30)
    assert re.fullmatch(r"%s on 127\.0\.0\.1 made no progress for \d+ s \(stopped\)" % name, line), line
    assert assert_checkpoints_intact(prefix)


def test_a_frozen_worker_over_ssh_ends_the_job(tmp_path, digits_rec, ssh_server, job_tag):
    """The ssh launcher: the worker's guard reports its state over the ssh connection."""
    hosts = tmp_path / "hosts"
    hosts.write_text(ssh_server.address + "\n")
    prefix = tmp_path / job_tag / "tiny"
    run_ = LauncherRun(["--stall-timeout", STALL, "-n", 2, "-s", 1, "--host-ip", "127.0.0.1", "--launcher", "ssh",
                        "-H", hosts] + train_command(digits_rec, prefix, "--kv-store", "dist_sync", "--batch-size", 8,
                                                     "--num-epochs", 1000), env=ssh_server.env)
    pid = run_.worker_pid(1)
    in_epoch_2(run_)
    frozen = freeze(pid)
    line = the_stop_line(run_, frozen, STALL + 30)
    assert re.fullmatch(r"worker rank 1 on %s made no progress for \d+ s \(stopped\)" % re.escape(ssh_server.address),
                        line), line
    assert assert_checkpoints_intact(prefix)


def test_a_frozen_scheduler_after_the_last_epoch_does_not_keep_the_job(tmp_path, digits_rec, job_tag):
    """Frozen while rank 0 validates its last epoch (slowed down so that the moment is certain): the workers
    finish their work, then ps-lite's final barrier would wait for the scheduler for ever."""
    prefix = tmp_path / job_tag / "tiny"
    run_ = start_job(digits_rec, prefix, 2, "--data-val", digits_rec.val,
                     env={"DPN_TEST_VALIDATION_DELAY_S": "0.3"})
    run_.wait_for(r"\[worker 1@\S+\] .*epoch-summary .*\"epoch\": 2,", timeout=240)
    frozen = freeze(role_pid(job_tag, "scheduler"))
    match = run_.wait_for(STOPPING, timeout=60)
    elapsed = time.monotonic() - frozen
    assert run_.finish(60) == 0, run_.report("expected exit status 0")
    print("ended %.1f s after the fault: %s" % (elapsed, match.group(0)))
    assert elapsed <= 30 + 5, run_.report("the finished job took %.0f s to end" % elapsed)  # 5 s: validation
    waiting = r"on 127\.0\.0\.1 \(waiting at the final barrier\)"
    assert re.fullmatch(r"every worker finished its work; left behind \d+ s later and killed: scheduler on 127\.0\.0\.1 "
                        r"\(stopped\), worker rank 0 %s, worker rank 1 %s, server %s" % (waiting, waiting, waiting),
                        match.group(1)), match.group(1)
    assert len(launcher_lines(run_)) == 1, run_.report("expected one line from the launcher")
    assert assert_checkpoints_intact(prefix) == [1, 2]


def test_a_slow_validation_is_no_stall(tmp_path, digits_rec, job_tag):
    """Rank 0 validates for over 3 x the stall timeout while rank 1 waits for it: rank 0 makes progress."""
    prefix = tmp_path / job_tag / "tiny"
    run_ = start_job(digits_rec, prefix, 1, "--data-val", digits_rec.val, env={"DPN_TEST_VALIDATION_DELAY_S": "4"})
    assert run_.finish(300) == 0, run_.report("the job failed")
    assert not launcher_lines(run_), run_.report("the launcher stopped a healthy job")
    summary = summaries(run_.stdout, 0)[-1]
    assert summary["val_images"] / summary["val_images_per_second"] >= 3 * STALL
    assert assert_checkpoints_intact(prefix) == [1]


def test_a_stall_is_restarted_and_ends_as_the_straight_run(tmp_path, digits_rec, job_tag):
    """Worker 1 frozen in epoch 2 of 4 (thawed by the test once the job is stopped): the relaunch resumes from
    epoch 1 and ends with the straight run's checkpoint, byte for byte."""
    straight, restarted = tmp_path / job_tag / "straight", tmp_path / job_tag / "restarted"
    run_ = start_job(digits_rec, straight, 4)
    assert run_.finish(400) == 0, run_.report("the straight run failed")
    run_ = start_job(digits_rec, restarted, 4, launcher_options=["--max-restarts", 1])
    pid = run_.worker_pid(1)
    in_epoch_2(run_)
    frozen = freeze(pid)
    run_.wait_for(r"launch\.py: worker rank 1 on 127\.0\.0\.1 made no progress for \d+ s \(stopped\)",
                  timeout=STALL + 30)
    assert time.monotonic() - frozen <= STALL + 30
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:  # killed by the launcher, as it should be
        pass
    run_.wait_for(r"launch\.py: restart 1 of 1: relaunching the job with --resume auto", timeout=60)
    assert run_.finish(400) == 0, run_.report("the restarted job failed")
    assert "resuming from %s" % checkpoint.params_path(str(restarted), 1) in run_.stdout
    for path in (checkpoint.params_path, checkpoint.states_path):
        assert pathlib.Path(path(str(restarted), 4)).read_bytes() == pathlib.Path(path(str(straight), 4)).read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# A worker cut off: tc (htb at 8 bit/s) on its TCP ports, the job inside a network namespace of the test's own

def _run(*command):
    return subprocess.run([str(word) for word in command], capture_output=True, text=True)


@pytest.fixture
def namespace():
    """A new network namespace with its loopback up; deleted afterwards. Skips where it cannot be created (not
    root, no iproute2), except under CI=true, where that is a failure."""
    name = "stalls-%s" % uuid.uuid4().hex[:8]
    made = shutil.which("ip") and shutil.which("tc") and _run("ip", "netns", "add", name).returncode == 0
    if not made:
        message = "cannot create a network namespace here (needs root and iproute2: ip, tc)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        assert _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").returncode == 0
        yield name
    finally:
        _run("ip", "netns", "del", name)


def local_ports(pid):
    """The local TCP ports of process ``pid`` (listening and connected)."""
    inodes = set()
    for fd in pathlib.Path("/proc/%d/fd" % pid).iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for row in pathlib.Path("/proc/%d/net/tcp" % pid).read_text().splitlines()[1:]:
        fields = row.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    return sorted(ports)


def cut_off(namespace, ports):
    """Shape every packet from or to ``ports`` on the namespace's loopback to 8 bit/s."""
    tc = ["ip", "netns", "exec", namespace, "tc"]
    commands = [tc + ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10"],
                tc + ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"],
                tc + ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "8bit",
                      "ceil", "8bit"]]
    for port in ports:
        for direction in ("sport", "dport"):
            commands.append(tc + ["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                                  "match", "ip", direction, str(port), "0xffff", "flowid", "1:20"])
    for command in commands:
        done = _run(*command)
        assert done.returncode == 0, "%s: %s" % (" ".join(command), done.stderr)


def test_a_worker_cut_off_ends_the_job(namespace, tmp_path, digits_rec, job_tag):
    """The worker is cut from the server, the server still talks to the other worker: the worker is named."""
    prefix = tmp_path / job_tag / "tiny"
    run_ = start_job(digits_rec, prefix, 1000, prefix_command=["ip", "netns", "exec", namespace])
    pid = run_.worker_pid(1)
    in_epoch_2(run_)
    cut_off(namespace, local_ports(pid))
    since = time.monotonic()
    line = the_stop_line(run_, since, STALL + 30)
    assert re.fullmatch(r"worker rank 1 on 127\.0\.0\.1 made no progress for \d+ s \(cut off: data to or from "
                        r"server on 127\.0\.0\.1 unacknowledged for \d+ s\)", line), line
    assert assert_checkpoints_intact(prefix)

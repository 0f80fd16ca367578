"""tools/launch.py: MXNet's launcher, repaired and supervised, runs real dist_sync jobs locally and over real ssh.

Every job is tests/kv_worker.py with 2 workers and 1 server on 127.0.0.1 only (--host-ip 127.0.0.1): pushes of known
gradients, SGD on the server, pulls that must equal the same update computed with numpy.
"""
import json
import os
import pathlib
import shutil
import signal
import time

import numpy as np
import pytest

import kv_worker
from launch_helpers import REPO, LauncherRun, job_processes, run_launcher
from sshd import free_port, require

WORKER = REPO / "tests" / "kv_worker.py"
JOB = ["-n", "2", "-s", "1", "--host-ip", "127.0.0.1"]
# An argument that shells would mangle (like a custom DPN config in JSON); it must reach the workers unchanged.
ECHO = '{"k_sec": [1, 1], "path": "$HOME/x \\ `id`; *"}'


def read_results(out, num_workers):
    results = [json.loads((out / ("rank-%d.json" % rank)).read_text()) for rank in range(num_workers)]
    assert [result["rank"] for result in results] == list(range(num_workers))
    assert [result["echo"] for result in results] == [ECHO] * num_workers
    assert {result["num_workers"] for result in results} == {num_workers}
    return results


def assert_weights(results, steps):
    """Both ranks pulled the same weights, equal to numpy's SGD on the gradients summed over the workers."""
    expected = kv_worker.expected_weights(len(results), steps)
    for key, weight in expected.items():
        pulled = [np.array(result["weights"][str(key)], dtype=np.float32) for result in results]
        assert np.array_equal(pulled[0], pulled[1]), "ranks disagree on key %d" % key
        np.testing.assert_allclose(pulled[0], weight, rtol=1e-6, atol=1e-6)


def hostfile(folder, *lines):
    path = folder / "hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["local", "ssh"])
def launcher(request, tmp_path):
    """(launcher options, extra environment, how the failure message names the host) for each launcher."""
    if request.param == "local":
        return ["--launcher", "local"], {}, "127.0.0.1"
    server = request.getfixturevalue("ssh_server")
    hosts = hostfile(tmp_path, "# the test's sshd", "", server.address)
    return ["--launcher", "ssh", "-H", hosts], server.env, server.address


def test_local_job_runs_on_loopback_and_aggregates(tmp_path, job_tag):
    run = run_launcher(JOB + ["--launcher", "local", "python", WORKER, "--out", tmp_path, "--steps", 3,
                              "--echo", ECHO, "--tag", job_tag])
    assert run.returncode == 0, run.report("launcher failed")
    results = read_results(tmp_path, 2)
    assert_weights(results, steps=3)
    for result in results:
        assert result["env"]["DMLC_PS_ROOT_URI"] == "127.0.0.1"
        assert result["env"]["DMLC_NODE_HOST"] == "127.0.0.1"
    for rank in (0, 1):
        assert "[worker %d@127.0.0.1] step 2 done" % rank in run.stdout
    assert not job_processes(job_tag)


def test_ssh_job_runs_over_real_sshd_in_synced_dir(tmp_path, ssh_server, job_tag):
    workdir, synced, out = tmp_path / "job", tmp_path / "synced", tmp_path / "out"
    for folder in (workdir, synced, out):
        folder.mkdir()
    shutil.copy(WORKER, workdir)
    hosts = hostfile(tmp_path, "# comment, then a blank line", "", ssh_server.address + "  # the test's sshd")
    run = run_launcher(JOB + ["--launcher", "ssh", "-H", hosts, "--sync-dst-dir", synced,
                              "python", "kv_worker.py", "--out", out, "--steps", 3, "--echo", ECHO, "--tag", job_tag],
                       env=ssh_server.env, cwd=workdir)
    assert run.returncode == 0, run.report("launcher failed")
    results = read_results(out, 2)
    assert_weights(results, steps=3)
    for result in results:
        assert result["env"]["SSH_CONNECTION"], "worker did not run under sshd"
        assert result["env"]["DMLC_NODE_HOST"] == result["env"]["DMLC_PS_ROOT_URI"] == "127.0.0.1"
        assert pathlib.Path(result["cwd"]).resolve() == synced.resolve()
    assert "[worker 1@%s] step 2 done" % ssh_server.address in run.stdout
    assert not job_processes(job_tag)


def test_killed_worker_stops_the_whole_job(tmp_path, launcher, job_tag):
    options, env, host = launcher
    run = LauncherRun(JOB + options + ["python", WORKER, "--out", tmp_path, "--steps", 100000, "--pause", 0.05,
                                       "--tag", job_tag], env=env)
    pid = run.worker_pid(1)
    run.wait_for(r"\[worker 1@\S+\] step 3 done")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    returncode = run.finish(timeout=60)
    elapsed = time.monotonic() - killed
    assert returncode == 1, run.report("expected exit status 1")
    assert elapsed < 30, run.report("launcher took %.1f s to stop the job" % elapsed)
    failures = [line for line in run.stderr_lines if line.startswith("launch.py: ")]
    assert len(failures) == 1, run.report("expected one failure line")
    assert "worker rank 1 on %s failed: exit code 137 (killed by SIGKILL)" % host in failures[0]
    assert not job_processes(job_tag), "processes left after the launcher exited"


def test_terminated_launcher_stops_its_job(tmp_path, job_tag):
    run = LauncherRun(JOB + ["--launcher", "local", "python", WORKER, "--out", tmp_path, "--steps", 100000,
                             "--pause", 0.05, "--tag", job_tag])
    run.wait_for(r"\[worker 1@\S+\] step 1 done")
    run.popen.terminate()
    assert run.finish(timeout=60) == 128 + signal.SIGTERM, run.report("expected exit status 143")
    assert "launch.py: interrupted by SIGTERM; stopping the job (4 processes)" in run.stderr
    assert not job_processes(job_tag), "processes left after the launcher exited"


def test_unreachable_host_fails_fast_and_starts_nothing(tmp_path, job_tag):
    require("ssh")
    port = free_port()
    hosts = hostfile(tmp_path, "127.0.0.1:%d" % port)
    started = time.monotonic()
    run = run_launcher(JOB + ["--launcher", "ssh", "-H", hosts, "python", WORKER, "--out", tmp_path,
                              "--tag", job_tag], timeout=60)
    assert run.returncode == 2
    assert time.monotonic() - started < 20
    assert run.stderr.count("\n") == 1, run.report("expected a one-line error")
    assert run.stderr.startswith("launch.py: error: hostfile %s line 1 (127.0.0.1:%d): ssh failed: " % (hosts, port))
    assert "Connection refused" in run.stderr
    assert not job_processes(job_tag)


@pytest.mark.parametrize("options, hostfile_text, message", [
    (["--launcher", "ssh", "-H", "{missing}"], None, "hostfile {missing}: No such file or directory"),
    (["--launcher", "ssh", "-H", "{hosts}"], "# nothing but a comment\n\n", "hostfile {hosts} lists no hosts"),
    (["--launcher", "ssh", "-H", "{hosts}"], "127.0.0.1:22:x\n",
     "hostfile {hosts} line 1: expected 'host' or 'host:port', got '127.0.0.1:22:x'"),
    (["--launcher", "ssh"], None, "--launcher ssh needs -H HOSTFILE"),
    (["--launcher", "local", "-H", "{hosts}"], "127.0.0.1\n", "-H {hosts}: the local launcher runs every process"),
    (["--launcher", "local", "-s", "0"], None, "-n and -s must be at least 1"),
    (["--launcher", "local", "--host-ip", "192.0.2.1"], None, "--host-ip 192.0.2.1: not an address of this machine"),
])
def test_bad_input_gives_one_line_error(tmp_path, options, hostfile_text, message):
    paths = {"missing": tmp_path / "missing", "hosts": tmp_path / "hosts"}
    if hostfile_text is not None:
        paths["hosts"].write_text(hostfile_text)
    options = [option.format(**paths) for option in options]
    run = run_launcher(["-n", "1"] + options + ["python", WORKER, "--out", tmp_path], timeout=60)
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch.py: error: " + message.format(**paths)), run.stderr


def test_help_lists_the_shim_and_mxnet_options():
    run = run_launcher(["--help"], timeout=60)
    assert run.returncode == 0
    for option in ("--host-ip", "--num-workers", "--hostfile", "--sync-dst-dir", "--launcher"):
        assert option in run.stdout

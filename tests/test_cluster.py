"""Distributed training on a simulated cluster (tools/dev/cluster.py): hosts as network namespaces with their own
addresses and sshd, the launcher on a head host of its own, over real ssh; the headline `make train NODES=4`,
--sync-dst-dir, and hosts that fail."""
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import kv_worker
import symbols
from conftest import REPO
from launch_helpers import LauncherRun, run_launcher
from sshd import require
from test_train import TINY, summaries

from dpn_mxnet import checkpoint, data
from dpn_mxnet.data import training
from tools.dev import cluster as simulated
from tools.dev.cluster import Cluster, ClusterError

HOSTS = 4
WORKER = REPO / "tests" / "kv_worker.py"


@pytest.fixture(scope="module")
def cluster():
    """Four hosts, shared by the tests of this module (each leaves them as it found them)."""
    require("ip", "/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync")
    try:
        with Cluster(HOSTS) as simulated:
            yield simulated
    except ClusterError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("cannot set up the simulated cluster: %s" % error)
        pytest.skip("cannot set up the simulated cluster: %s" % error)


@pytest.fixture
def hosts(cluster):
    """The cluster, checked afterwards: nothing of the test's jobs is left running on any host, and every host is
    reachable again."""
    yield cluster
    leftovers = cluster.leftovers()
    cluster.kill_leftovers()  # e.g. the launcher of a test that failed half-way, and its job
    for index in range(1, HOSTS + 1):
        cluster.freeze(index, frozen=False)
        cluster.set_link(index, up=True)
        if cluster.sshd_pid(index) is None or not os.path.exists("/proc/%d" % cluster.sshd_pid(index)):
            cluster.start_sshd(index)
    assert not leftovers, "processes left running: %s" % {host: [line[:100] for line in lines]
                                                            for host, lines in leftovers.items()}


def launch(cluster, args, timeout=240, **options):
    """tools/launch.py ARGS on the head host, to the end."""
    return run_launcher(args, timeout=timeout, env=cluster.env, prefix_command=cluster_prefix(cluster), **options)


def cluster_prefix(cluster):
    return ["ip", "netns", "exec", cluster.namespace(0)]


def train_args(digits, prefix, epochs, batch=8):
    return ["--num-classes", 10, "--size", 32, "--data-train", digits.train, "--model-prefix", prefix,
            "--batch-size", batch, "--num-epochs", epochs, "--lr", 0.1, "--disp-batches", 5]


def assert_consistent(text, workers, epochs):
    """Every worker logged every epoch, with the same weights digest per epoch; returns {epoch: digest}."""
    ranks = [summaries(text, rank) for rank in range(workers)]
    for rank, found in enumerate(ranks):
        assert [s["epoch"] for s in found] == list(epochs), "rank %d logged epochs %s" % (rank, found)
    digests = {s["epoch"]: s["weights_sha1"] for s in ranks[0]}
    for rank, found in enumerate(ranks):
        assert {s["epoch"]: s["weights_sha1"] for s in found} == digests, "rank %d disagrees" % rank
    return digests


def test_make_train_over_four_hosts(hosts, digits_rec, tmp_path):
    prefix = tmp_path / "tiny"
    args = " ".join(map(str, train_args(digits_rec, prefix, epochs=2)))
    done = hosts.run(["make", "train", "MODEL=" + TINY, "NODES=%d" % HOSTS, "HOSTS=%s" % hosts.hostfile,
                      "ARGS=" + args], env={"OMP_NUM_THREADS": "1"}, cwd=REPO, timeout=300,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    report = "stdout:\n%s\nstderr:\n%s" % (done.stdout[-4000:], done.stderr[-4000:])
    assert done.returncode == 0, report
    assert "--host-ip" not in done.stdout.splitlines()[0], "the Makefile passed an address"
    for rank in range(HOSTS):
        marker = [line for line in done.stdout.splitlines() if "@launch: kvstore rank %d of 4" % rank in line]
        assert len(marker) == 1, report
    placed = sorted(line.split("@", 1)[1].split("]")[0] for line in done.stdout.splitlines()
                    if line.startswith("[worker ") and "@launch: kvstore rank" in line)
    assert placed == sorted(hosts.addresses), "one worker per host, each prefix naming its host's address"
    assert_consistent(done.stdout, HOSTS, [1, 2])
    assert checkpoint.available_epochs(str(prefix)) == [1, 2]
    recipe = checkpoint.load_recipe(str(prefix), 2)
    assert recipe["world_size"] == HOSTS


def test_sync_dst_dir_gives_each_host_its_own_copy(hosts, tmp_path):
    workdir, out = tmp_path / "job", tmp_path / "out"
    workdir.mkdir()
    out.mkdir()
    shutil.copy(WORKER, workdir)
    synced = hosts.local / "job"
    run = launch(hosts, ["-n", HOSTS, "--launcher", "ssh", "-H", hosts.hostfile, "--sync-dst-dir", synced,
                         "python", "kv_worker.py", "--out", out, "--steps", 3], cwd=workdir)
    assert run.returncode == 0, run.report("launcher failed")
    results = [json.loads((out / ("rank-%d.json" % rank)).read_text()) for rank in range(HOSTS)]
    expected = kv_worker.expected_weights(HOSTS, 3)
    for result in results:
        for key, weight in expected.items():
            np.testing.assert_allclose(np.array(result["weights"][str(key)], np.float32), weight, rtol=1e-6, atol=1e-6)
        assert result["cwd"] == str(synced)
        assert result["env"]["DMLC_PS_ROOT_URI"] == hosts.head, "the scheduler is not on the head host"
        assert result["env"]["SSH_CONNECTION"].split()[2] == result["env"]["DMLC_NODE_HOST"]
    assert sorted(r["env"]["DMLC_NODE_HOST"] for r in results) == sorted(hosts.addresses)
    assert not os.listdir(hosts.local), "the copies went to the shared file system"
    for index in range(1, HOSTS + 1):
        assert (hosts.local_of(index) / "job" / "kv_worker.py").read_bytes() == WORKER.read_bytes()


def test_host_without_sshd_is_refused_before_anything_starts(hosts, tmp_path):
    hosts.stop_sshd(3)
    run = launch(hosts, ["-n", HOSTS, "--launcher", "ssh", "-H", hosts.hostfile, "python", WORKER, "--out",
                         tmp_path], timeout=60)
    assert run.returncode == 2, run.report("expected exit status 2")
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.report("expected a one-line error")
    assert lines[0].startswith("launch.py: error: hostfile %s line 3 (%s:22): ssh failed: "
                               % (hosts.hostfile, hosts.address(3))), run.stderr
    assert "Connection refused" in lines[0]
    assert not list(tmp_path.iterdir())


def weights_digest(params_file):
    """The short SHA-1 of a checkpoint's weights, as the epoch summaries give it (names sorted, then bytes)."""
    digest = hashlib.sha1()
    arg_params, _ = checkpoint.load_params(params_file)
    for name in sorted(arg_params):
        digest.update(name.encode())
        digest.update(arg_params[name].asnumpy().tobytes())
    return digest.hexdigest()[:16]


def assert_checkpoints_intact(prefix, digests):
    """Every complete checkpoint holds the weights its epoch logged."""
    epochs = checkpoint.available_epochs(str(prefix))
    assert epochs, "no checkpoint saved"
    for epoch in epochs:
        assert weights_digest(checkpoint.params_path(str(prefix), epoch)) == digests[epoch], "epoch %d" % epoch


def wait_until_clean(cluster, timeout=60):
    """Wait until nothing but the sshd listeners runs in the namespaces; returns what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while cluster.leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    return cluster.leftovers()


def host_of_rank(run, rank):
    """The address in the prefix of the line where worker ``rank`` announced itself."""
    return run.wait_for(r"\[worker %d@([\d.]+)\] @launch: kvstore rank" % rank).group(1)


def failure_lines(run):
    return [line for line in run.stderr_lines if line.startswith("launch.py: ")]


def test_frozen_host_ends_the_job_with_one_line(hosts, digits_rec, tmp_path):
    prefix = tmp_path / "tiny"
    run = LauncherRun(["-n", HOSTS, "--launcher", "ssh", "-H", hosts.hostfile, "python", "train/train_imagenet.py",
                       "--network", TINY, "--kv-store", "dist_sync"]
                      + train_args(digits_rec, prefix, epochs=1000, batch=4), env=hosts.env,
                      prefix_command=cluster_prefix(hosts))
    frozen = host_of_rank(run, 1)
    run.wait_for(r"saved .*tiny-0002\.params", timeout=180)
    hosts.freeze(hosts.index_of(frozen))
    assert run.finish(timeout=120) == 1, run.report("expected exit status 1")
    lines = failure_lines(run)
    assert len(lines) == 1 and "on %s failed: exit code 255" % frozen in lines[0], run.report("one line")
    assert "ssh lost the connection" in lines[0], run.report("the cause is the host not answering")
    hosts.freeze(hosts.index_of(frozen), frozen=False)  # a frozen host cannot clean up until it thaws
    assert not wait_until_clean(hosts), "processes left on the hosts"
    assert_checkpoints_intact(prefix, {s["epoch"]: s["weights_sha1"] for s in summaries(run.stdout, 0)})


def test_host_that_stays_unreachable_uses_up_the_restarts(hosts, digits_rec, tmp_path):
    prefix = tmp_path / "tiny"
    run = LauncherRun(["--max-restarts", 2, "-n", HOSTS, "--launcher", "ssh", "-H", hosts.hostfile,
                       "python", "train/train_imagenet.py", "--network", TINY, "--kv-store", "dist_sync"]
                      + train_args(digits_rec, prefix, epochs=1000, batch=4), env=hosts.env,
                      prefix_command=cluster_prefix(hosts))
    lost = host_of_rank(run, 2)
    run.wait_for(r"saved .*tiny-0002\.params", timeout=180)
    hosts.set_link(hosts.index_of(lost), up=False)
    assert run.finish(timeout=180) == 1, run.report("expected exit status 1")
    lines = failure_lines(run)
    assert "on %s failed: exit code 255" % lost in lines[0], run.report("the first failure names the host")
    assert [line.split(":")[1].strip() for line in lines[1:]] == [
        "restart 1 of 2", "relaunch failed", "restart 2 of 2", "relaunch failed", "restarts used up (2 of 2); the "
        "last failure"], run.report("two relaunches refused at the ssh check, then one final line")
    assert "(%s:22): ssh failed: " % lost in lines[-1], run.report("the final line names the host")
    assert not wait_until_clean(hosts), "processes left on the hosts (also on the unreachable one)"
    assert_checkpoints_intact(prefix, {s["epoch"]: s["weights_sha1"] for s in summaries(run.stdout, 0)})


def test_job_continues_without_a_dead_host(hosts, digits_rec, tmp_path):
    prefix = tmp_path / "tiny"
    run = LauncherRun(["--max-restarts", 1, "--min-nodes", 3, "-n", HOSTS, "--launcher", "ssh", "-H", hosts.hostfile,
                       "python", "train/train_imagenet.py", "--network", TINY, "--kv-store", "dist_sync"]
                      + train_args(digits_rec, prefix, epochs=4, batch=4), env=hosts.env, prefix_command=cluster_prefix(hosts))
    lost = host_of_rank(run, 1)
    run.wait_for(r"saved .*tiny-0001\.params", timeout=180)
    hosts.set_link(hosts.index_of(lost), up=False)  # for good: it stays down until the test ends
    assert run.finish(timeout=240) == 0, run.report("the job did not finish on the other hosts")
    lines = failure_lines(run)
    assert "on %s failed: exit code 255" % lost in lines[0], run.report("the failure names the host")
    assert lines[1:] == ["launch.py: restart 1 of 1: relaunching the job with --resume auto\n",
                         lines[2], "launch.py: relaunching on 3 of 4 hosts: 3 workers, 3 servers\n"], run.report("")
    assert lines[2].startswith("launch.py: leaving out %s:22 (hostfile %s line %d (%s:22): ssh failed: "
                               % (lost, hosts.hostfile, hosts.index_of(lost), lost)), run.report("")
    change = run.wait_for(r"rank 0 INFO recipe of \S+-(\d{4}), changed: world_size: 4 -> 3: global batch 16 -> 12, "
                          r"learning rate 0.1 -> 0.075 \(linear rule\)")
    resumed = int(change.group(1))
    shards = training.batches_per_epoch(data.num_records(digits_rec.train), 3, 4)  # shards of the new world
    run.wait_for(r"rank 0 INFO .* x 3 workers, lr 0.075, %d batches/epoch" % shards)
    metrics = checkpoint.read_metrics(checkpoint.metrics_path(str(prefix)))
    assert [s["epoch"] for s in metrics] == [1, 2, 3, 4]
    digests = {s["epoch"]: s["weights_sha1"] for s in metrics}
    for rank in range(3):  # the epochs of the relaunch: the last summary of each, the same on every worker
        logged = {s["epoch"]: s["weights_sha1"] for s in summaries(run.stdout, rank)}
        assert {epoch: logged[epoch] for epoch in range(resumed + 1, 5)} == {
            epoch: digests[epoch] for epoch in range(resumed + 1, 5)}, "rank %d disagrees" % rank
    recipe = checkpoint.load_recipe(str(prefix), 4)
    assert recipe["world_size"] == 3 and recipe["flags"]["lr"] == 0.075
    assert_checkpoints_intact(prefix, digests)
    assert not wait_until_clean(hosts), "processes left on the hosts (also on the dead one)"


def test_traffic_per_step_is_every_gradient_pushed_and_every_weight_pulled(cluster):
    """tools/dev/ps_traffic.py (a second simulated cluster beside this module's) against 2 x 4 bytes x the parameters
    counted here; the overhead of messages and headers measured on these links is 0.6 % for this network."""
    done = subprocess.run([sys.executable, "tools/dev/ps_traffic.py", "--network", TINY, "--servers", "2",
                           "--workers", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    symbol = symbols.get_symbol(TINY, 1000, image_size=32)
    shapes, _, _ = symbol.infer_shape(data=(1, 3, 32, 32))
    parameters = sum(int(np.prod(shape)) for name, shape in zip(symbol.list_arguments(), shapes)
                     if name not in ("data", "softmax_label"))
    assert result["parameters"] == parameters
    for sent_and_received in result["worker_bytes_per_step"]:
        assert 1.0 <= sent_and_received / (2 * 4 * parameters) <= 1.02, result
    share = 2 * 4 * parameters * 2 / 2  # every worker's push and pull of the server's half, on average
    assert 1.0 <= sum(result["server_bytes_per_step"]) / 2 / share <= 1.02, result


def test_second_cluster_beside_the_first_and_clean_up_on_interrupt(cluster):
    """A cluster set up beside the module's takes other names and addresses; `tools/dev/sim_cluster.py run`, stopped by
    SIGTERM while its command runs, takes its hosts down (namespaces, links, sshd)."""
    run = subprocess.Popen([sys.executable, "tools/dev/sim_cluster.py", "run", "-n", "2", "--", "sleep 600"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    up = run.stderr.readline()
    assert up.startswith("sim_cluster: 2 hosts "), "the cluster did not come up: %s" % up
    head = ipaddress.ip_address(up.split("head ")[1].strip())
    number = (int(head) - int(simulated.BLOCK.network_address)) // 256
    second = simulated.Cluster(2)
    second.number = number
    assert not set(second.addresses + [second.head]) & set(cluster.addresses + [cluster.head])
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert second.namespace(2) in namespaces and cluster.namespace(HOSTS) in namespaces
    run.terminate()
    assert run.wait(60) == 128 + 15, run.stderr.read()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "sc%d-" % number not in namespaces and cluster.namespace(HOSTS) in namespaces
    assert "sc%dbr" % number not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert number not in simulated.instances()

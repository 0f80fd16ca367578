"""The stall watchdog of a supervised job: it ends a job that stopped making progress, naming who stopped it.

It reads what the supervisor collects for every process of the job (see ``supervisor.JobProcess``): the progress
and done markers of the workers (``progress.py``) and the reports of each process's guard (``remote_guard.py``:
process state, listening ports, peers whose data waits for an acknowledgement). Once a second it applies, in order:

* **finished**: every worker exited 0 or announced that its work is done; whatever still runs ``FINISH_GRACE_S``
  later (a frozen scheduler or server, workers waiting for it in ps-lite's final barrier) is killed and the job
  ends with status 0;
* **stopped or silent**: a process stopped (state T) or whose guard has not reported for ``timeout`` seconds
  cannot take part in ps-lite's final barrier, so the job ends even while the workers still train;
* **no progress**: once every worker has reported progress (start-up, binding and the first step are not watched),
  no worker reporting progress for ``timeout`` seconds ends the job, naming the stopped, silent or cut-off
  processes, else the workers that are behind, else every worker.
"""
import collections
import threading
import time

CHECK_S = 1.0
FINISH_GRACE_S = 15.0  # how long processes may outlive the workers' completed work (a healthy end takes seconds)
SILENT_S = 5.0         # a guard reports every second; this much silence names its process as unreachable
STUCK_S = 3.0          # unacknowledged, retransmitted data this old counts as a cut link
_STOPPED = ("T", "t")
_JOB_ROLES = ("worker", "server", "scheduler")


class Watchdog:
    """Watches a ``Supervisor``'s processes in a thread; stops the job through ``supervisor.stop``."""

    def __init__(self, supervisor, timeout):
        self.supervisor, self.timeout = supervisor, timeout
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self):
        self.thread.start()

    def _watch(self):
        while not self.supervisor.stopping:
            time.sleep(CHECK_S)
            verdict = self.check(self.supervisor.processes(), time.monotonic())
            if verdict:
                self.supervisor.stop(*verdict)

    def check(self, processes, now):
        """None, or (the line that ends the job, the launcher's exit status)."""
        processes = [p for p in processes if p.role in _JOB_ROLES]
        workers = [p for p in processes if p.role == "worker"]
        running = [p for p in processes if p.popen.poll() is None]
        if not workers or not running:
            return None
        if all(p.finished_at is not None for p in workers):
            return _finished(running, now - max(p.finished_at for p in workers))
        for process in running:
            evidence = _evidence(process, now, self.timeout)
            if evidence:
                return "%s made no progress for %.0f s (%s)" % (process.name, evidence[0], evidence[1]), 1
        active = [p for p in workers if p.finished_at is None]
        if any(p.progress_at is None for p in active):
            return None
        stalled = now - max(p.progress_at for p in active)
        if stalled <= self.timeout:
            return None
        return "; ".join("%s made no progress for %.0f s (%s)" % (p.name, seconds, why)
                         for p, seconds, why in _culprits(running, active, now, stalled)), 1


def _finished(running, since):
    if since <= FINISH_GRACE_S:
        return None
    running = sorted(running, key=lambda p: (p.state not in _STOPPED, _JOB_ROLES.index(p.role), p.rank or 0))
    left = ", ".join("%s (%s)" % (p.name, "stopped" if p.state in _STOPPED else "waiting at the final barrier")
                     for p in running)
    return ("every worker finished its work; left behind %.0f s later and killed: %s" % (since, left)), 0


def _evidence(process, now, limit):
    """(seconds, why) when ``process`` has been stopped or silent for longer than ``limit``."""
    if process.stopped_since is not None and now - process.stopped_since > limit:
        return now - process.stopped_since, "stopped"
    if now - process.report_at > limit:
        return now - process.report_at, "no report from its host: frozen or cut off"
    return None


def _culprits(running, active, now, stalled):
    """[(process, seconds, why)]: who stopped the job's progress, the most specific evidence first."""
    def seconds(process, evidence=0.0):
        own = now - process.progress_at if process.role == "worker" and process.progress_at else stalled
        return max(own, evidence)
    stopped = [(p, seconds(p, now - p.stopped_since), "stopped") for p in running if p.stopped_since is not None]
    silent = [(p, seconds(p, now - p.report_at), "no report from its host: frozen or cut off")
              for p in running if now - p.report_at > SILENT_S]
    if stopped or silent:
        return stopped + silent
    cut = [(p, seconds(p, age), "cut off: data to or from %s unacknowledged for %.0f s" % (peers, age))
           for p, peers, age in _cut_off(running)]
    if cut:
        return cut
    waiting = [(p, seconds(p), "in uninterruptible sleep, e.g. on a hung file system")
               for p in running if p.state == "D"]
    if waiting:
        return waiting
    most = max(p.steps for p in active)
    behind = [(p, seconds(p), "%d steps behind the other workers" % (most - p.steps))
              for p in active if p.steps < most]
    return behind or [(p, seconds(p), "every worker waiting; no process stopped or cut off") for p in active]


def _cut_off(processes):
    """[(process, 'its peers', seconds)]: the processes cut off from their peers.

    Every guard reports the peers its process has unacknowledged data for; a link is cut when either end reports
    the other. Workers exchange data with every server (and the reverse) at every step, so the process cut off is
    the one whose every such peer is cut from it; when several qualify (one server: each of its workers does too),
    the one cut from the most peers."""
    owners = collections.defaultdict(list)
    for process in processes:
        for endpoint in process.report.get("listen", ()):
            owners[endpoint.rsplit(":", 1)[1]].append(process)
    cut = collections.defaultdict(dict)  # process -> {peer process: seconds}
    for process in processes:
        for endpoint, age in process.report.get("stuck", {}).items():
            address, port = endpoint.rsplit(":", 1)
            found = owners.get(port, [])
            found = [q for q in found if q.host.split(":")[0] == address] or found
            if age >= STUCK_S and found and found[0] is not process:
                for one, other in ((process, found[0]), (found[0], process)):
                    cut[one][other] = max(age, cut[one].get(other, 0.0))
    partners = {"worker": "server", "server": "worker"}
    candidates = [p for p in cut if {q for q in processes if q.role == partners.get(p.role)} <= set(cut[p])]
    if not candidates:
        return []
    most = max(len(cut[p]) for p in candidates)
    return [(p, ", ".join(sorted(q.name for q in cut[p])), max(cut[p].values()))
            for p in candidates if len(cut[p]) == most]

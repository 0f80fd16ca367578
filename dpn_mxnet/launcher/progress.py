"""What a worker tells the launcher's stall watchdog: that it is making progress, and that its work is done.

A worker of a dist job (started by ``tools/launch.py``) prints a marker line at most once a second while it trains,
validates or writes a checkpoint, and one when its work is complete; the launcher takes them out of the relayed
output (``dpn_mxnet.launcher.watchdog``). Outside a dist job nothing is printed.
"""
import contextlib
import threading
import time

PROGRESS_MARKER = "@launch: progress"
DONE_MARKER = "@launch: done"
EVERY_S = 1.0


def _bytes_written():
    """This process's count of bytes passed to write() and similar calls (/proc/self/io)."""
    with open("/proc/self/io") as counters:
        return next(int(line.split()[1]) for line in counters if line.startswith("wchar:"))


class Progress:
    """Call it after every training step (with the steps done so far) or validation batch (without)."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.steps = 0
        self._last = float("-inf")

    def __call__(self, steps=None):
        if steps is not None:
            self.steps = steps
        now = time.monotonic()
        if self.enabled and now - self._last >= EVERY_S:
            self._last = now
            print("%s %d" % (PROGRESS_MARKER, self.steps), flush=True)

    @contextlib.contextmanager
    def writing(self):
        """Around a long write (a checkpoint): progress every second in which this process wrote bytes, so that a
        slow file system is progress and a hung one is not."""
        if not self.enabled:
            yield
            return
        finished = threading.Event()

        def watch():
            written = _bytes_written()
            while not finished.wait(EVERY_S):
                now = _bytes_written()
                if now > written:
                    self()
                written = now

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            finished.set()
            watcher.join()
        self()

    def done(self):
        """The worker's work is complete (for rank 0: its last checkpoint is written); what remains is the
        kvstore's final barrier."""
        if self.enabled:
            print(DONE_MARKER, flush=True)

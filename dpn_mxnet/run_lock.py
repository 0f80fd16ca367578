"""One training run per checkpoint prefix: an exclusive ``flock`` on ``P.lock`` beside the checkpoints, held for the
whole run and released by the kernel when its process ends, however it ends (kill -9 included).

The lock file names its holder (host, PID, start time) for the one-line refusal of a second run. ``flock`` works
between processes of one machine on any local file system; on NFS, Linux turns it into an NFS byte-range lock, which
the server arbitrates between clients (NFSv4, or NFSv3 with the lock manager, i.e. mounts without ``nolock``; after a
client crash the server frees its locks when the client's lease ends). File systems that keep locks per client
(``nolock`` mounts, some FUSE and SMB mounts) do not stop a run on another machine.
"""
import errno
import fcntl
import os
import socket
import time


class PrefixInUse(ValueError):
    """Another run holds the prefix; the message is one line naming it."""


def lock_path(prefix):
    return prefix + ".lock"


def _refusal(prefix, path):
    try:
        with open(path) as f:
            holder = f.read().strip()
    except OSError:
        holder = ""
    return PrefixInUse("--model-prefix %s: another training run is using it (%s; lock %s); wait for it to end, or "
                       "give another --model-prefix" % (prefix, holder or "holder unknown", path))


def check_free(prefix):
    """Raise PrefixInUse if a run holds ``prefix`` now (a probe: nothing is created or kept)."""
    path = lock_path(prefix)
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(prefix, path) from None
    finally:
        os.close(descriptor)


class RunLock:
    """The exclusive lock of one run on ``prefix``; ``release`` deletes the lock file and lets it go."""

    def __init__(self, prefix):
        self.path = lock_path(prefix)
        while True:  # a holder deletes the file as it releases it: lock the file that is at the path
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    raise _refusal(prefix, self.path) from None
                raise
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        self.descriptor = descriptor
        holder = "run on %s, pid %d, started %s" % (socket.gethostname(), os.getpid(),
                                                     time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        os.ftruncate(descriptor, 0)
        os.write(descriptor, (holder + "\n").encode())

    def release(self):
        if self.descriptor is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self.descriptor)
        self.descriptor = None

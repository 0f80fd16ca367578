"""Entry points run inside the test's own process, as ``python SCRIPT ARGS`` runs them.

For the tests whose subject is what a tool computes, not how its process starts or ends: ``run_script`` returns
the ``subprocess.CompletedProcess`` that ``subprocess.run([python, SCRIPT, *ARGS], cwd=REPO, capture_output=True,
text=True)`` would, without starting an interpreter and importing MXNet once more. The script runs as
``__main__`` with its ``sys.argv``, in the repository, and ends as the interpreter ends it: ``sys.exit(n)`` is
status n, ``sys.exit("message")`` prints the message on stderr with status 1, an uncaught exception prints its
traceback with status 1. The environment, ``sys.argv`` and the working folder are restored afterwards. Every
tool keeps tests that run it as a process (its one-line errors, exit statuses and signals among them).
"""
import contextlib
import io
import os
import runpy
import subprocess
import sys
import traceback

from conftest import REPO


def _exit_status(code, stderr):
    """The status of ``SystemExit(code)``, printing a message as the interpreter does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def run_script(script, *args, env=None):
    """``python SCRIPT ARGS`` (a path relative to the repository) run here, with ``env`` added to the
    environment for its duration."""
    argv = [str(script), *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ), sys.argv, os.getcwd()
    try:
        os.environ.update(env or {})
        sys.argv = argv
        os.chdir(REPO)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
                status = 0
            except SystemExit as end:
                status = _exit_status(end.code, stderr)
            except Exception:  # the interpreter prints it and exits 1
                traceback.print_exc()
                status = 1
    finally:
        os.environ.clear()
        os.environ.update(saved[0])
        sys.argv = saved[1]
        os.chdir(saved[2])
    return subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())

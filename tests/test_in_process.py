"""in_process.run_script ends a script as the interpreter ends its process: the same status, output and error
output as ``python SCRIPT`` for each way a script can end; the environment is restored."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from in_process import run_script

SCRIPT = '''import os, sys
print("argv", sys.argv[1:], os.getcwd() == {repo!r}, os.environ.get("IN_PROCESS_PROBE"))
print("to stderr", file=sys.stderr)
os.environ["IN_PROCESS_LEFT"] = "set by the script"
how = sys.argv[1]
if how == "exit-3":
    sys.exit(3)
if how == "exit-message":
    sys.exit("error: one line")
if how == "raise":
    raise ValueError("uncaught")
if how == "exit-none":
    sys.exit()
'''


@pytest.mark.parametrize("how", ["end", "exit-none", "exit-3", "exit-message", "raise"])
def test_a_script_ends_as_its_process_would(tmp_path, how):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    env = {"IN_PROCESS_PROBE": "given"}
    process = subprocess.run([sys.executable, str(script), how, "x"], cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, **env))
    argv, cwd = list(sys.argv), os.getcwd()
    os.chdir(tmp_path)
    try:
        here = run_script(script, how, "x", env=env)
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(cwd)
    assert (here.returncode, here.stdout) == (process.returncode, process.stdout)
    if how == "raise":  # the traceback names this runner's frames too; its last line is the same
        assert "Traceback" in here.stderr and here.stderr.splitlines()[-1] == process.stderr.splitlines()[-1]
    else:
        assert here.stderr == process.stderr
    assert "IN_PROCESS_PROBE" not in os.environ and "IN_PROCESS_LEFT" not in os.environ
    assert sys.argv == argv

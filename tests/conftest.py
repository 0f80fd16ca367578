"""Shared fixtures: the reference folder (beside the checkout, or $DPN_REFERENCE), and real data sets packed with the
project's tools."""
import os
import pathlib

import pytest

# fixtures: photo_rec, digits_rec (datasets.py); released (checkpoints.py); job_tag (launch_helpers.py);
# ssh_server (sshd.py); tiny_digits_run (trained.py)
pytest_plugins = ["datasets", "checkpoints", "launch_helpers", "sshd", "trained"]

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = pathlib.Path(os.environ.get("DPN_REFERENCE") or REPO.parent / "shared" / "reference")


@pytest.fixture(scope="session")
def reference():
    """``../shared/reference``; skips without it, except under CI=true where its absence is a failure."""
    if not (REFERENCE / "official" / "summary.json").is_file():
        message = "reference data not found at %s (the authors' graphs, see the developers' guide)" % REFERENCE
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE


# The longest test files go first, so that `make test`'s parallel pytest processes do not end on one of them alone;
# the first two spend most of their time waiting (stall timeouts, ssh keepalives, simulated hosts), which the other
# processes' work then fills.
LONGEST_FILES = ("test_cluster.py", "test_stalls.py", "test_nothing_lost.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)

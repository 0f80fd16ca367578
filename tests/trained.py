"""Session fixtures with checkpoints trained by train/train_imagenet.py as a user runs it, shared by the tests that
need the same training (each copies what it writes beside).

tiny_digits_run  the tiny DPN of test_train.py on the digits: batch 8, rate 0.1, the digits' augmentation,
                 4 epochs, every epoch kept (--keep-last 0).
"""
import shutil

import pytest

from dpn_mxnet import checkpoint


@pytest.fixture(scope="session")
def tiny_digits_run(digits_rec, tmp_path_factory):
    """The prefix (str) of the tiny DPN trained for 4 epochs on the digits; epochs 1 to 4 are kept."""
    from test_train import DIGITS_AUG, run_train, train_command
    prefix = tmp_path_factory.mktemp("tiny_digits_run") / "tiny"
    done = run_train(train_command(digits_rec, prefix, "--batch-size", 8, "--num-epochs", 4, "--lr", 0.1,
                                   "--keep-last", 0, *DIGITS_AUG))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert checkpoint.available_epochs(str(prefix)) == [1, 2, 3, 4]
    return str(prefix)


def copy_epoch(prefix, epoch, to_prefix):
    """The checkpoint of ``epoch`` under ``prefix`` (graph, description, parameters, optimizer states, recipe,
    metrics) copied to ``to_prefix``, as if its run had ended there."""
    for path in (checkpoint.symbol_path, checkpoint.model_path, checkpoint.metrics_path):
        shutil.copyfile(path(prefix), path(to_prefix))
    for path in (checkpoint.params_path, checkpoint.states_path, checkpoint.recipe_path):
        shutil.copyfile(path(prefix, epoch), path(to_prefix, epoch))
    checkpoint.write_metrics(to_prefix, through=epoch)

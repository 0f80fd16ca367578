"""The mutation check (tools/mutation_check.py, `make mutation`) stays in step with the code: every planted defect
still finds the text it replaces exactly once, and names tests that exist."""
import pathlib
import shlex

from tools import mutation_check

TESTS = pathlib.Path(__file__).resolve().parent


def test_every_mutant_still_applies():
    stale = {m.name: mutation_check.stale(m) for m in mutation_check.MUTANTS if mutation_check.stale(m)}
    assert not stale, stale


def test_every_mutant_names_tests_that_exist():
    for mutant in mutation_check.MUTANTS:
        files = [word for word in mutant.tests if word.endswith(".py")]
        assert files and all((TESTS.parent / name).is_file() for name in files), (mutant.name, shlex.join(mutant.tests))

"""The mutation check (tools/dev/mutation_check.py, `make mutation`) stays in step with the code: every planted defect
still finds its anchor and, in it, the text it replaces exactly once, and names tests that exist; a defect follows
its anchor when code moves."""
import dataclasses
import pathlib
import shlex

from tools.dev import mutation_check

TESTS = pathlib.Path(__file__).resolve().parent


def test_every_mutant_still_applies():
    stale = {m.name: mutation_check.stale(m) for m in mutation_check.MUTANTS if mutation_check.stale(m)}
    assert not stale, stale


def test_every_mutant_names_tests_that_exist():
    for mutant in mutation_check.MUTANTS:
        files = [word for word in mutant.tests if word.endswith(".py")]
        assert files and all((TESTS.parent / name).is_file() for name in files), (mutant.name, shlex.join(mutant.tests))


MODULE = """LIMIT = 3  # LIMIT = 3


class Holder:
    @staticmethod
    def limit(x):
        return min(x, LIMIT)


def limit(x):
    return min(x, LIMIT)
"""


def test_a_defect_lands_in_its_anchor_wherever_the_anchor_lives(tmp_path):
    """The text to replace may occur elsewhere in the file: only the anchor's copy changes; the mutant applies to
    any file that defines its anchor, so moving code means changing the mutant's file only."""
    (tmp_path / "moved.py").write_text(MODULE)
    mutant = mutation_check.Mutant("x", "promise", "moved.py", "Holder.limit", "min(x, LIMIT)", "max(x, LIMIT)",
                                   ("tests/test_x.py",))
    assert mutation_check.stale(mutant, tmp_path) is None
    assert mutation_check.planted(mutant, MODULE) == MODULE.replace(
        "        return min(x, LIMIT)", "        return max(x, LIMIT)")
    constant = dataclasses.replace(mutant, anchor="LIMIT", old="3", new="4")
    assert mutation_check.stale(constant, tmp_path) == "moved.py, LIMIT: the text to replace is found 2 times, " \
                                                       "expected once: '3'"
    constant = dataclasses.replace(constant, old="= 3  #", new="= 4  #")
    assert mutation_check.planted(constant, MODULE).startswith("LIMIT = 4  # LIMIT = 3\n")


def test_a_defect_whose_anchor_is_gone_says_so(tmp_path):
    (tmp_path / "moved.py").write_text(MODULE)
    for anchor in ("clamp", "Holder.clamp", "limit.x"):
        mutant = mutation_check.Mutant("x", "promise", "moved.py", anchor, "min", "max", ("tests/test_x.py",))
        assert mutation_check.stale(mutant, tmp_path) == ("moved.py: defines no function, class or name %r (moved? "
                                                          "update the mutant's file)" % anchor)
    gone = mutation_check.Mutant("x", "promise", "gone.py", "limit", "min", "max", ("tests/test_x.py",))
    assert mutation_check.stale(gone, tmp_path) == "gone.py: no such file"

"""The per-variant facts live in one table, ``symbols.VARIANT_TABLE``: every entry point's --network names exactly
its variants, train's default batches are its batches, the README's batch row agrees with it, and no source file
outside symbols/config.py spells out a list of variants of its own."""
import ast
import pathlib
import re

import pytest

import symbols
from dpn_mxnet import cli
from test_cli import ENTRY_POINTS, capture_parser

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = list(symbols.VARIANT_TABLE)
NAME = re.compile(r"\bdpn\d+b?\b")
SOURCES = ("dpn_mxnet", "symbols", "tools", "train", "test")
TABLE_MODULE = REPO / "symbols" / "config.py"


def named_variants(text):
    return NAME.findall(text)


def test_the_table_is_what_the_package_exports():
    assert symbols.VARIANTS == {name: row.config for name, row in symbols.VARIANT_TABLE.items()}
    assert symbols.DEFAULT_BATCH == {name: row.batch_size for name, row in symbols.VARIANT_TABLE.items()}
    assert cli.VARIANT_NAMES.split(", ") == NAMES


@pytest.fixture(scope="module")
def network_helps():
    """{entry point: the --network help it prints} for every entry point that takes --network."""
    found = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for entry in ENTRY_POINTS:
            parser = capture_parser(entry, monkeypatch)
            for action in parser._actions:
                if "--network" in action.option_strings:
                    found[entry.split(":")[0]] = action.help
    return found


def test_every_network_option_names_every_variant_of_the_table(network_helps):
    assert {"train/train_imagenet.py", "test/score.py", "tools/predict.py", "tools/dev/benchmark.py"} <= set(
        network_helps)
    for path, text in network_helps.items():
        assert named_variants(text) == NAMES, (path, text)


def test_train_default_batches_are_the_tables(monkeypatch):
    parser = capture_parser("train/train_imagenet.py:parse_args", monkeypatch)
    batch = next(a for a in parser._actions if "--batch-size" in a.option_strings)
    pairs = re.findall(r"(dpn\d+b?) (\d+)", batch.help)
    assert [(name, int(size)) for name, size in pairs] == list(symbols.DEFAULT_BATCH.items())


def test_readme_batch_row_agrees_with_the_table():
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| batch per device")]
    assert len(rows) == 1, "README.md has no single '| batch per device' row"
    pairs = re.findall(r"(dpn\d+b?) (\d+)", rows[0])
    assert pairs, rows[0]
    for name, size in pairs:
        assert symbols.DEFAULT_BATCH[name] == int(size), (name, rows[0])


def second_lists(source):
    """Where ``source`` spells out three or more variant names: in one string, or as the constant elements (or
    keys) of one tuple, list, set or dict display. Yields (line, names)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = set(named_variants(node.value))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            names = {item.value for item in items if isinstance(item, ast.Constant) and item.value in NAMES}
        else:
            continue
        if len(names) >= 3:
            yield node.lineno, sorted(names)


def test_second_lists_are_recognised():
    found = list(second_lists('VARIANTS = ("dpn68", "dpn92", "dpn131")\nHELP = "dpn68, dpn68b, dpn98, ..."\n'
                              'PAIR = ("dpn68", "dpn92")\n'))
    assert found == [(1, ["dpn131", "dpn68", "dpn92"]), (2, ["dpn68", "dpn68b", "dpn98"])]


def test_no_source_file_keeps_a_list_of_variants_of_its_own():
    found = {}
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path != TABLE_MODULE:
                found.update({"%s:%d" % (path.relative_to(REPO), line): names
                              for line, names in second_lists(path.read_text())})
    assert not found, "lists of variants outside symbols/config.py (derive them from symbols.VARIANT_TABLE): %s" % found

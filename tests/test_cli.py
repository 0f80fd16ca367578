"""One flag vocabulary: every entry point's parser, captured in-process, names each shared option the same way,
with one default and one meaning, shows each default once in --help, and none keeps a retired name."""
import argparse
import importlib.util
import pathlib

import pytest

from dpn_mxnet import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
# Entry points whose parser is built by calling main or parse_args with an empty command line (mxnet imports only).
ENTRY_POINTS = ("train/train_imagenet.py:parse_args", "test/score.py:parse_args", "tools/predict.py:parse_args",
                "tools/export_onnx.py:parse_args", "tools/refine_bn.py:parse_args", "tools/dev/benchmark.py:parse_args",
                "tools/dev/bench_side_by_side.py:parse_args", "tools/dev/bench_io.py:main", "tools/demo.py:parse_args",
                "tools/make_rec.py:main", "tools/make_digits.py:main", "tools/make_class_index.py:main",
                "tools/summary.py:main", "tools/plot_log.py:main", "tools/convert_weights.py:parse_args")
RETIRED = ("--prefix", "--epoch", "--model", "--image-size", "--cpu-fast", "--variant")
# Options that mean the same everywhere: same destination, default and help wherever they appear.
SAME_EVERYWHERE = ("--model-prefix", "--gpus", "--arrangement", "--bad-records", "--data-nthreads")


class Captured(Exception):
    pass


def capture_parser(entry, monkeypatch):
    """The parser an entry point builds, taken when it starts parsing (nothing else of the entry point runs)."""
    path, function = entry.split(":")
    if not (REPO / path).is_file():
        pytest.skip("%s is not in this checkout" % path)
    spec = importlib.util.spec_from_file_location("entry_" + pathlib.Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def take(parser, *args, **kwargs):
        raise Captured(parser)

    monkeypatch.setattr(cli.ArgumentParser, "parse_known_args", take)
    with pytest.raises(Captured) as captured:
        getattr(module, function)(*([[]] if function != "main" or "argv" in module.main.__code__.co_varnames
                                     else []))
    return captured.value.args[0]


@pytest.fixture(scope="module")
def parsers():
    found = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for entry in ENTRY_POINTS:
            try:
                found[entry.split(":")[0]] = capture_parser(entry, monkeypatch)
            except pytest.skip.Exception:
                continue
    return found


def options(parser):
    return {option: action for action in parser._actions for option in action.option_strings}


def test_every_entry_point_uses_the_project_parser(parsers):
    assert len(parsers) >= len(ENTRY_POINTS) - 1
    for path, parser in parsers.items():
        assert isinstance(parser, cli.ArgumentParser) and not parser.allow_abbrev, path


def test_help_shows_each_default_once(parsers):
    for path, parser in parsers.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.help or action.help is argparse.SUPPRESS:
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert text.count("default") <= 1, (path, action.option_strings, text)
            if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
                assert "default" in text, (path, action.option_strings, text)


def test_no_entry_point_keeps_a_retired_flag(parsers):
    for path, parser in parsers.items():
        kept = set(options(parser)) & set(RETIRED)
        assert not kept, (path, kept)


def test_shared_options_have_one_name_one_default_one_meaning(parsers):
    for option in SAME_EVERYWHERE:
        actions = [(path, options(parser)[option]) for path, parser in parsers.items() if option in options(parser)]
        assert len(actions) >= 2, option
        first_path, first = actions[0]
        for path, action in actions[1:]:
            assert (action.dest, action.default, action.choices) == (first.dest, first.default, first.choices), \
                (option, first_path, path)
    readers = ("test/score.py", "tools/predict.py", "tools/export_onnx.py", "tools/refine_bn.py")
    for option in ("--model-prefix", "--load-epoch", "--network", "--size"):
        for path in readers:
            assert option in options(parsers[path]), (path, option)
    for path in readers[:2] + readers[3:] + ("train/train_imagenet.py", "tools/dev/benchmark.py"):  # export: the CPU
        assert "--gpus" in options(parsers[path]), path
    assert options(parsers["train/train_imagenet.py"])["--size"].default == 224
    assert options(parsers["test/score.py"])["--arrangement"].default == "auto"

"""Every dotted module path that the docs (README, docs/, data_lists/) and the docstrings name, such as
``dpn_mxnet.evaluation.inference_module`` or ``symbols.CPU.for_inference``, resolves to a module or to what a
module defines: moved code leaves no stale names behind."""
import ast
import importlib
import importlib.util
import re
import subprocess

from conftest import REPO

ROOTS = ("dpn_mxnet", "symbols", "train", "tools")
DOTTED = re.compile(r"(?<![\w./-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(ROOTS))
SPAN = re.compile(r"(`+)(.+?)\1", re.S)  # a code span: ``name`` in docstrings, `name` in Markdown
# names of files, not of modules: train.rec, tools.log, ...
FILE_SUFFIXES = {"rec", "idx", "lst", "log", "txt", "json", "jsonl", "py", "png", "md", "params", "states", "onnx",
                 "safetensors", "sh", "tar", "gz"}


def tracked(pattern):
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", pattern], cwd=REPO,
                         check=True, capture_output=True).stdout.decode()
    return [REPO / name for name in out.split("\0") if name and (REPO / name).is_file()]


def docstrings(path):
    """The docstrings of a Python file's module, classes and functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield text


def names_in(text):
    """The dotted paths of ``text``: in its prose, and at the start of its code spans (a span that starts with
    other text quotes a command or a program's output, which may name what no longer exists)."""
    names = DOTTED.findall(SPAN.sub(" ", text))
    for span in SPAN.finditer(text):
        start = DOTTED.match(span.group(2).strip())
        names += [start.group(1)] if start else []
    return names


def named_paths():
    """{dotted path: [files that name it]} from the docs and the docstrings."""
    texts = [(path, path.read_text()) for path in tracked("*.md")]
    texts += [(path, text) for path in tracked("*.py") for text in docstrings(path)]
    found = {}
    for path, text in texts:
        for name in names_in(text):
            if name.rsplit(".", 1)[1] not in FILE_SUFFIXES:
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def resolves(name):
    """Whether ``name`` is a module (found, not imported: some need timm), or a module's attribute (attributes of
    attributes too)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.util.find_spec(".".join(parts[:cut]))
        except ImportError:
            found = None
        if found is None:
            continue
        target = importlib.import_module(".".join(parts[:cut])) if cut < len(parts) else None
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_the_scan_finds_the_names_it_is_meant_to_check():
    found = named_paths()
    assert {"dpn_mxnet.arrangement_policy.choose", "symbols.CPU.for_inference", "symbols.get_symbol"} <= set(found)
    assert "train.rec" not in found
    assert names_in("`[worker 1] train.x.Error: ...` and `symbols.CPU(...)`, train.y.z.") == ["train.y.z",
                                                                                              "symbols.CPU"]
    assert resolves("tools.dev.timm_reference") and resolves("dpn_mxnet.launcher.supervisor.STOP_GRACE_S")
    assert not resolves("dpn_mxnet.no_such_module") and not resolves("symbols.CPU.nope")


def test_every_dotted_path_in_docs_and_docstrings_resolves():
    stale = {name: sorted(files) for name, files in named_paths().items() if not resolves(name)}
    assert not stale, "named but not found (moved or renamed?): %s" % stale


def test_the_readme_stays_a_users_page():
    """README.md is for users, at most 300 lines; studies and measurements go in docs/."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 300

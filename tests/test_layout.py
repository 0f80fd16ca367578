"""The code outside tests/ stands on its own: no entry point, tool or library module changes ``sys.path`` (to
reach into tests/ or anywhere else); what a developers' tool shares with the tests lives in tools/dev/."""
import ast

from conftest import REPO

CODE = ("symbols", "dpn_mxnet", "train", "test", "tools")


def sys_path_changes(path):
    """The lines of ``path`` that call a method of ``sys.path`` or assign to it."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        targets = node.targets if isinstance(node, ast.Assign) else [target]
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr == "path" and getattr(t.value, "id", None) == "sys":
                lines.append(node.lineno)
    return sorted(lines)


def test_no_code_outside_the_tests_changes_sys_path(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nsys.path.insert(0, 'tests')\nsys.path = []\nprint(sys.path)\n")
    assert sys_path_changes(probe) == [2, 3]
    found = {str(path.relative_to(REPO)): sys_path_changes(path) for folder in CODE
             for path in sorted((REPO / folder).rglob("*.py"))}
    assert len(found) > 40 and not {path: lines for path, lines in found.items() if lines}

"""The house rules that the code's shape must keep: the floors (import-linter's contracts in
pyproject.toml), thin tools over the commands, console scripts that install no `tools` package,
files a reader can hold in mind, and commands that say which extra to install instead of a
traceback when torch is missing."""
import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("evaluate", "propose", "train", "detect", "test", "convert_proposals", "export")
LIBRARY = ("detector", "proposals", "eval")
MAX_LINES = 420  # "files under ~400 lines"


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, anywhere in it (top level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_the_floors_import_one_way():
    # detector on proposals on eval; eval free of torch/OpenCV; detector.cli on top of the rest.
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0


def test_tools_are_thin_scripts_over_the_commands():
    # Each script is its docstring and one call into its command module, nothing else (so no
    # tool imports another: tools/ is not a package that import-linter could see).
    assert not (REPO / "tools" / "__init__.py").exists(), "tools/ must not be a package"
    for command in COMMANDS:
        path = REPO / "tools" / f"{command}.py"
        assert imported_modules(path) <= {"sys", f"detector.cli.{command}"}, path
        assert len(path.read_text().splitlines()) <= 40, f"{path} is not a thin script"


def test_console_scripts_point_at_library_modules():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert sorted(scripts) == sorted(f"gdet-{c.replace('_', '-')}" for c in COMMANDS)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        command = name.removeprefix("gdet-").replace("-", "_")
        assert module == f"detector.cli.{command}" and function == "main"
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [p for p in packages if p.startswith("tools")], packages


def test_files_stay_short():
    files = [p for root in LIBRARY + ("tools",) for p in (REPO / root).rglob("*.py")]
    long = {str(p.relative_to(REPO)): n for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


# A fresh interpreter in which torch, torchvision and OpenCV cannot be imported, as after
# `pip install -e .` without the `detect` extra.
_BLOCKED = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision", "cv2"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    from detector.cli.%s import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("command", ["propose", "train", "detect", "test", "export"])
def test_without_torch_a_command_names_the_extra(tmp_path, command):
    # Inputs that would otherwise start the work: the missing extra is the one line printed.
    import json
    import numpy as np
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(tmp_path / "photos" / "a.png")
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": 1, "width": 50, "height": 40, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
                         "area": 81, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    (tmp_path / "a.pt").write_bytes(b"not read before torch is")
    argv = {"propose": ["--images", "photos", "--out", "cache"],
            "train": ["--config", str(REPO / "configs" / "raccoon_cpu.yaml"),
                      "--set", "output=run"],
            "detect": ["photos/a.png", "--checkpoint", "a.pt", "--out", "dets"],
            "test": ["--gt", "gt.json", "--images", "photos", "--checkpoint", "a.pt",
                     "--out", "out"],
            "export": ["a.pt", "--out", "a.onnx", "--check-image", "photos/a.png"]}[command]
    out = subprocess.run([sys.executable, "-c", _BLOCKED % command, *argv], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[detect]" in lines[0], out.stderr


def test_without_torch_help_still_works():
    for command in COMMANDS:
        out = subprocess.run([sys.executable, "-c", _BLOCKED % command, "--help"], cwd=REPO,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, (command, out.stderr)


def test_each_package_s_public_face_resolves():
    import detector
    import eval
    import proposals

    for package in (detector, eval, proposals):
        assert package.__all__ and len(package.__all__) <= 12, package.__name__  # small
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)

"""One direction of dependencies: the core never imports a representation, a representation imports
only the core and the shared plugin modules, the portrait package has no import cycle, and a
representation from outside the package registers and fits through the CLI."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from canon_edit.cli import main
from canon_edit.representation import ENV_REGISTRY

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "canon_edit"
PLUGINS = ROOT / "representations"
PLUGIN_NAMES = ("representations", "canon_edit_representations")
METHODS = {"codef", "atlas", "portrait"}  # the built-in representations: none may import another
# plugin modules that several methods share
SHARED = {"fields", "layer_init", "encoding", "motion", "presets"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(relative level, module) of every import in `path`, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and not base:  # `from . import x`
                out += [(node.level, alias.name) for alias in node.names]
            else:
                out.append((node.level, base))
    return out


def test_the_core_never_imports_a_representation():
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in CORE.rglob("*.py")
        for level, module in imports(path)
        if level == 0 and module.split(".")[0] in PLUGIN_NAMES
    ]
    assert offenders == []


def _method_of(path: Path) -> str:
    return path.relative_to(PLUGINS).parts[0].removesuffix(".py")


def test_a_representation_imports_only_the_core_and_shared_modules():
    offenders = []
    for path in PLUGINS.rglob("*.py"):
        own = _method_of(path)
        for level, module in imports(path):
            if level == 0 and module.split(".")[0] in PLUGIN_NAMES:
                offenders.append(f"{path.relative_to(ROOT)}: absolute import of {module}")
            if level == 0:
                continue
            # resolve the relative import to its top-level entry of representations/
            package = path.relative_to(PLUGINS).parts[:-1]
            anchor = package[: len(package) - (level - 1)] if level - 1 <= len(package) else None
            if anchor is None:
                offenders.append(f"{path.relative_to(ROOT)}: import above the package")
                continue
            target = (*anchor, *module.split(".")) if module else anchor
            top = target[0] if target else ""
            if top in METHODS and top != own:
                offenders.append(f"{path.relative_to(ROOT)} ({own}) imports {'.'.join(target)}")
            elif top and top not in METHODS | SHARED and top != own:
                offenders.append(f"{path.relative_to(ROOT)} imports unknown plugin module {top}")
    assert offenders == []


def test_the_portrait_package_has_no_import_cycle():
    folder = PLUGINS / "portrait"
    graph = {p.stem: set() for p in folder.glob("*.py")}
    for path in folder.glob("*.py"):
        for level, module in imports(path):
            if level == 1 and module.split(".")[0] in graph:
                graph[path.stem].add(module.split(".")[0])
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_a_representation_from_outside_the_package_fits_through_the_cli(
    tmp_path, clip_dir, monkeypatch, capsys
):
    """The worked example of docs/ARCHITECTURE.md, registered by the environment, never installed."""
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    monkeypatch.setenv(ENV_REGISTRY, "still=still_image:StillImage")
    out = tmp_path / "run"
    assert main(["fit", str(clip_dir), "-o", str(out), "--method", "still", "--quiet"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["method"] == "still" and info["status"] == "done"
    # the known answer: a still image fitted to a clip is its per-pixel mean
    from canon_edit.representation import load_bake
    from canon_edit.run import RunFolder

    run = RunFolder(out)
    mean = run.clip().frames.mean(0)
    bake = load_bake(run)
    assert (bake.layers[0].texture - mean).abs().mean() < 0.01
    assert main(["render", str(out), "--frame", "1", "-o", str(tmp_path / "f.png")]) == 0
    assert main(["eval", str(out)]) == 0


def test_a_bad_registration_is_one_line(monkeypatch, capsys, tmp_path, clip_dir):
    monkeypatch.setenv(ENV_REGISTRY, "broken")
    assert main(["fit", str(clip_dir), "-o", str(tmp_path / "r")]) == 2
    assert ENV_REGISTRY in capsys.readouterr().err
    monkeypatch.setenv(ENV_REGISTRY, "gone=no_such_module_xyz:Thing")
    assert main(["fit", str(clip_dir), "-o", str(tmp_path / "r"), "--method", "gone"]) == 2
    err = capsys.readouterr().err
    assert "gone" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["codef", "atlas", "portrait"])
def test_the_built_ins_register_through_entry_points(method):
    from canon_edit.representation import get_representation

    cls = get_representation(method)
    assert cls.name == method and cls.__module__.startswith("canon_edit_representations.")


@pytest.mark.parametrize(("method", "segmentable"), [("codef", True), ("atlas", True), ("portrait", False)])
def test_what_a_method_says_of_segments_and_memory(method, segmentable):
    """2D bakes split into segments (their seams are lifted keyframes), a portrait is fitted whole; the
    measured memory cost is the CPU's, so a GPU fit is not checked against it."""
    import torch

    from canon_edit.representation import get_representation

    cls = get_representation(method)
    assert cls.segmentable() is segmentable
    assert cls.memory_cost(torch.device("cpu")) is cls.fit_memory is not None
    assert cls.memory_cost(torch.device("cuda")) is None

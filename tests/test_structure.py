"""Every system folder has the agreed files and a spec consistent with the registry."""

from pathlib import Path

import pytest

from trustlab.registry import SYSTEMS, available_systems
from trustlab.systems.base import SystemSpec

SYSTEMS_DIR = Path(__file__).resolve().parents[1] / "src" / "trustlab" / "systems"
REQUIRED = ["__init__.py", "config.py", "data.py", "method.py", "baselines.py", "experiment.py", "README.md"]
FOLDERS = sorted(p.name for p in SYSTEMS_DIR.iterdir() if p.is_dir() and not p.name.startswith("__"))


@pytest.mark.parametrize("folder", FOLDERS)
def test_system_folder_has_agreed_files(folder):
    missing = [f for f in REQUIRED if not (SYSTEMS_DIR / folder / f).is_file()]
    assert not missing, f"systems/{folder} lacks {missing}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_is_registered(folder):
    assert any(t == f"trustlab.systems.{folder}:SYSTEM" for t in SYSTEMS._targets.values()), folder


@pytest.mark.parametrize("name", available_systems())
def test_spec_and_config(name):
    from trustlab.config import SystemConfig

    spec = SYSTEMS.get(name)
    assert isinstance(spec, SystemSpec) and spec.name == name
    cls = spec.config_cls()
    assert issubclass(cls, SystemConfig)
    for scale in ("smoke", "quick", "default", "paper"):
        cls.for_scale(scale).validate()
    assert callable(spec.run_fn())
    readme = (SYSTEMS_DIR / SYSTEMS._targets[name].split(":")[0].rsplit(".", 1)[1] / "README.md").read_text()
    assert "<!-- results:start -->" in readme and "<!-- results:end -->" in readme


@pytest.mark.parametrize("folder", FOLDERS)
def test_system_readme_is_user_documentation_of_at_most_about_250_lines(folder):
    readme = (SYSTEMS_DIR / folder / "README.md").read_text()
    n = len(readme.splitlines())
    assert n <= 260, f"systems/{folder}/README.md has {n} lines: move development history to docs/dev/"
    dev = Path(__file__).resolve().parents[1] / "docs" / "dev"
    assert any(dev.glob(f"{folder.replace('_', '-')}*.md")) or any(dev.glob(f"{folder}*.md")), \
        f"docs/dev/ has no development notes for {folder}"


@pytest.mark.parametrize("module", ["tiny_clip", "tiny_llama"])
def test_models_take_tensors_not_data_sets(module):
    import ast

    src = (SYSTEMS_DIR.parent / "models" / f"{module}.py").read_text()
    imported = [n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.module] + \
               [a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("trustlab.data") or m.startswith("trustlab.systems")], imported

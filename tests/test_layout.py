"""The package layout's arrows: every import statement of every library module, read with `ast`
(function-level imports included), points only at the packages its layer may use, so no package cycle exists."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Package -> the project packages it may import. dnnlib and torch_utils are the floor; edm_bridge holds the frozen
# denoisers; metrics, training (the GAN trainer) and dpm (the diffusion trainer) sit above; smart_plugin above them.
ALLOWED = {
    'dnnlib': set(),
    'torch_utils': {'dnnlib'},
    'edm_bridge': {'dnnlib', 'torch_utils'},
    'metrics': {'dnnlib', 'torch_utils'},
    'dpm': {'dnnlib', 'torch_utils', 'edm_bridge'},
    'training': {'dnnlib', 'torch_utils', 'metrics'},
    'smart_plugin': {'dnnlib', 'torch_utils', 'edm_bridge', 'training'},
}


def _imported_packages(path: pathlib.Path) -> set[str]:
    """Top-level project packages named by the import statements of `path`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names & set(ALLOWED)


def _modules(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob('*.py'))


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_package_imports_only_downward(package):
    assert _modules(package), f'{package}/ has no modules'
    bad = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) - ALLOWED[package] - {package})
           for path in _modules(package)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_allowed_arrows_have_no_cycle():
    state = {}  # package -> 'open' while on the DFS stack, 'done' after.

    def visit(package, stack):
        if state.get(package) == 'open':
            raise AssertionError(f'package cycle: {" -> ".join(stack + [package])}')
        if state.get(package) != 'done':
            state[package] = 'open'
            for dep in sorted(ALLOWED[package]):
                visit(dep, stack + [package])
            state[package] = 'done'
    for package in sorted(ALLOWED):
        visit(package, [])


def test_the_floor_is_not_importing_trainers():
    # The two known faults the layout fixed: metrics/ used training.distributed / image_io, the diffusion trainer
    # lived inside edm_bridge/ and used the GAN trainer's internals.
    for package in ('metrics', 'edm_bridge', 'torch_utils', 'dnnlib'):
        for path in _modules(package):
            assert not _imported_packages(path) & {'training', 'dpm', 'smart_plugin'}, path
    assert not list((ROOT / 'edm_bridge').glob('dpm_*.py'))


def test_layout_table_names_every_package_and_script():
    table = (ROOT / 'docs' / 'layout.md').read_text()
    packages = sorted(p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file())
    scripts = sorted(p.name for p in ROOT.glob('*.py'))
    missing = [name for name in packages if f'`{name}/' not in table] + [name for name in scripts
                                                                        if f'`{name}`' not in table]
    assert missing == []

"""The package layout's arrows: the allowed arrows are the table of docs/architecture.md; every
import statement of every library module, read with `ast` (function-level imports included), and every
'<package>.<module>.<Class>' string (class_name construction) points only along them, and the allowed import arrows
have no cycle."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# 'training.dataset.ImageFolderDataset', or a function named for dnnlib.util.call_func_by_name: 'training.resume.f'.
CLASS_NAME = re.compile(r'([a-z_]+)(\.[a-z_0-9]+)+\.[A-Za-z_]\w*')


def _table() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({room: rooms it may import}, {room: rooms it may name by class_name}) from docs/architecture.md."""
    text = (ROOT / 'docs' / 'architecture.md').read_text()
    imports, names = {}, {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        match = re.fullmatch(r'`(\w+)/`', cells[0]) if len(cells) == 3 else None
        if match:
            imports[match.group(1)] = set(re.findall(r'`(\w+)`', cells[1]))
            names[match.group(1)] = set(re.findall(r'`(\w+)`', cells[2]))
    return imports, names


ALLOWED, ALLOWED_NAMES = _table()


def _imported_packages(path: pathlib.Path) -> set[str]:
    """Top-level project packages named by the import statements of `path`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names & set(ALLOWED)


def _named_packages(path: pathlib.Path) -> set[str]:
    """Top-level project packages named by '<package>.<module>.<Class>' strings of `path` (class_name arrows)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = CLASS_NAME.fullmatch(node.value)
            if match:
                names.add(match.group(1))
    return names & set(ALLOWED)


def _modules(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob('*.py'))


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_package_imports_only_downward(package):
    assert _modules(package), f'{package}/ has no modules'
    bad = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) - ALLOWED[package] - {package})
           for path in _modules(package)}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_table_names_every_package():
    packages = sorted(p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file())
    assert sorted(ALLOWED) == packages == sorted(ALLOWED_NAMES)
    assert all(deps <= set(ALLOWED) for deps in list(ALLOWED.values()) + list(ALLOWED_NAMES.values()))


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_class_name_strings_point_along_the_table(package):
    bad = {str(path.relative_to(ROOT)): sorted(_named_packages(path) - ALLOWED[package] - ALLOWED_NAMES[package]
                                               - {package})
           for path in _modules(package)}
    assert {k: v for k, v in bad.items() if v} == {}


def _named_objects(path: pathlib.Path) -> set[str]:
    """The '<package>.<module>.<name>' strings of `path` that start with a project package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = CLASS_NAME.fullmatch(node.value)
            if match and match.group(1) in ALLOWED:
                found.add(node.value)
    return found


def test_named_objects_exist():
    # A name in a string is an arrow no import checks: it must still resolve (a removed function once broke one).
    import dnnlib  # noqa: PLC0415
    named = {name for package in ALLOWED for path in _modules(package) for name in _named_objects(path)}
    assert 'training.dataset.ImageFolderDataset' in named
    missing = []
    for name in sorted(named):
        try:
            dnnlib.util.get_obj_by_name(name)
        except (ImportError, AttributeError, ValueError) as err:
            missing.append(f'{name}: {err}')
    assert missing == []


def test_class_name_strings_are_seen():
    # The hidden arrows the table declares are found by the scan: the allow-list names the reader by its stored name,
    # metrics/compare.py calls the snapshot loader by name. The metrics import the reader itself from dataset_io.
    assert _named_packages(ROOT / 'torch_utils' / 'dataset_classes.py') == {'training'}
    assert _named_packages(ROOT / 'metrics' / 'compare.py') == {'training'}
    assert _named_packages(ROOT / 'metrics' / 'frechet_inception_distance.py') == set()
    assert _imported_packages(ROOT / 'metrics' / 'digit_metrics.py') >= {'dataset_io'}


def test_the_stored_dataset_name_is_only_a_re_export():
    # training/dataset.py is the name snapshots store, nothing more: the reader lives in dataset_io.
    import dnnlib  # noqa: PLC0415
    from dataset_io import reader  # noqa: PLC0415
    from torch_utils import dataset_classes  # noqa: PLC0415
    assert dnnlib.util.get_obj_by_name(dataset_classes.IMAGE_FOLDER_DATASET) is reader.ImageFolderDataset
    assert dataset_classes.IMAGE_FOLDER_DATASET == 'training.dataset.ImageFolderDataset'
    tree = ast.parse((ROOT / 'training' / 'dataset.py').read_text())
    assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in tree.body)
    assert not any(isinstance(node, (ast.ClassDef, ast.FunctionDef)) for node in ast.walk(tree))


def test_only_scripts_import_the_cli_helpers():
    # cli/ holds the click pieces; no room may import it, and the scripts do.
    assert all('cli' not in deps for room, deps in ALLOWED.items() if room != 'cli')
    assert 'cli' in ALLOWED
    scripts = [path for path in ROOT.glob('*.py') if 'cli' in _imported_packages(path)]
    assert {'train.py', 'train_dpm.py', 'dataset_tool.py'} <= {path.name for path in scripts}


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
    for package in ('metrics', 'edm_bridge', 'torch_utils', 'dnnlib', 'dataset_io', 'gan_tools'):
        for path in _modules(package):
            assert not _imported_packages(path) & {'training', 'dpm', 'smart_plugin', 'cli'}, path
    assert not list((ROOT / 'edm_bridge').glob('dpm_*.py'))


def test_layout_table_names_every_package_and_script():
    table = (ROOT / 'docs' / 'layout.md').read_text()
    packages = sorted(p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file())
    scripts = sorted(p.name for p in ROOT.glob('*.py'))
    missing = [name for name in packages if f'`{name}/' not in table] + [name for name in scripts
                                                                        if f'`{name}`' not in table]
    assert missing == []

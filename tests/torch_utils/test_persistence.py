"""Tests for torch_utils.persistence: the NVIDIA persistence format (version 6) and our persistent classes."""

import copy
import os
import pickle
import re
import subprocess
import sys
import textwrap
import types
import uuid

import numpy as np
import pytest
import torch

import dnnlib
from temp_modules import import_source
from torch_utils import persistence

# A small persistent class written to a temp module file (so inspect can find its source).
AFFINE_SOURCE = '''"""Test module: a persistent affine layer."""
import torch

from torch_utils import persistence

SCALE = 1.0


@persistence.persistent_class
class Affine(torch.nn.Module):
    """Multiplies by a seeded weight and SCALE."""

    def __init__(self, features, seed=0, extra=None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn([features], generator=gen, dtype=torch.float64))

    def forward(self, x):
        return x * self.weight * SCALE  # Read from the module, so a patched source changes the output.


@persistence.persistent_class
class OptOut(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self._record_init_args = False
        self.value = value


@persistence.persistent_class
class Plain:
    def __init__(self, value):
        self.value = value


@persistence.persistent_class
class WithSetstate:
    def __init__(self, value):
        self.value = value

    def __setstate__(self, state):
        self.__dict__.update(state, restored_by_setstate=True)
'''

SOURCE_B = AFFINE_SOURCE.replace('SCALE = 1.0', 'SCALE = 2.0')  # Never written to a file: only ever exec'd.


@pytest.fixture(scope='module')
def affine(tmp_path_factory):
    # Imported once: a second import of the same text would be a different module, while loading a pickle of
    # that text reuses the first module that registered it.
    return import_source(tmp_path_factory.mktemp('affine'), AFFINE_SOURCE, 'persist_affine')


def _meta(source, class_name, state, version=6):
    return dict(type='class', version=version, module_src=source, class_name=class_name, state=state)


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Decorator


def test_decorated_class_keeps_names_and_is_a_subclass(affine):
    cls = affine.Affine
    assert (cls.__name__, cls.__qualname__, cls.__module__) == ('Affine', 'Affine', affine.__name__)
    assert cls.__doc__ == 'Multiplies by a seeded weight and SCALE.'
    assert issubclass(cls, torch.nn.Module) and cls.__mro__[1].__name__ == 'Affine'
    assert persistence.persistent_class(cls) is cls


def test_is_persistent_on_class_and_instance(affine):
    layer = affine.Affine(3)
    assert persistence.is_persistent(affine.Affine) and persistence.is_persistent(layer)
    assert not persistence.is_persistent(affine.Affine.__mro__[1])
    assert not persistence.is_persistent(torch.nn.Linear(2, 2))
    assert not persistence.is_persistent([1]) and not persistence.is_persistent(3)


def test_persistent_class_rejects_non_class():
    with pytest.raises(TypeError, match=re.escape("persistent_class expects a class, got 3 of type int")):
        persistence.persistent_class(3)


def test_class_without_source_file_fails_at_decoration(monkeypatch):
    module = types.ModuleType('persist_interactive_session')
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec('class Interactive:\n    pass\n', module.__dict__)
    with pytest.raises(ValueError, match=re.escape(
            "persistent_class cannot record the source of class 'Interactive': module "
            "'persist_interactive_session' has no readable source file (was the class defined in an interactive "
            "session or by exec?). Define it in a .py file.")):
        persistence.persistent_class(module.Interactive)


def test_class_whose_module_is_gone_fails_at_decoration():
    namespace = {'__name__': 'persist_module_not_in_sys_modules'}
    exec('class Orphan:\n    pass\n', namespace)
    with pytest.raises(ValueError, match=re.escape("its module 'persist_module_not_in_sys_modules' is not in")):
        persistence.persistent_class(namespace['Orphan'])


def test_init_args_are_deep_copies_taken_after_init(affine):
    extra = [1, [2, 3]]
    layer = affine.Affine(3, seed=5, extra=extra)
    extra[1].append(4)
    assert layer.init_args == (3,)
    assert type(layer.init_kwargs) is dnnlib.EasyDict
    assert layer.init_kwargs == {'seed': 5, 'extra': [1, [2, 3]]}
    assert layer.init_kwargs.extra == [1, [2, 3]]
    layer.init_kwargs.extra.append(5)  # The property hands out copies too.
    assert layer.init_kwargs.extra == [1, [2, 3]]


def test_accepted_init_arg_types(affine):
    gen = torch.Generator().manual_seed(0)
    extra = dict(array=np.arange(3), scalar=np.float32(2), tensor=torch.rand(2, generator=gen),
                 param=torch.nn.Parameter(torch.ones(1)), dtype=torch.float16, nested=(None, {1.5, 'a'}, b'x'),
                 child=affine.Plain(1))
    layer = affine.Affine(2, extra=extra)
    assert layer.init_kwargs.extra['array'].tolist() == [0, 1, 2]
    assert layer.init_kwargs.extra['child'].value == 1


def test_unpickleable_init_arg_names_type_and_class(affine):
    with pytest.raises(TypeError, match=re.escape(
            "Affine: constructor argument extra has type torch._C.Generator, which a persistent pickle cannot store; "
            "expected None, bool, int, float, str, bytes, numpy arrays or scalars, torch tensors or dtypes, "
            "persistent objects, or lists/tuples/dicts/sets of these")):
        affine.Affine(2, extra=torch.Generator())
    with pytest.raises(TypeError, match=re.escape("Affine: constructor argument extra[1]['k'] has type builtins.obj")):
        affine.Affine(2, extra=[1, {'k': object()}])
    with pytest.raises(TypeError, match=re.escape("Plain: constructor argument args[0] has type builtins.object")):
        affine.Plain(object())  # Positional arguments are checked the same way.


def test_record_init_args_opt_out_stores_none(affine):
    obj = affine.OptOut(object())  # Not checked: nothing is recorded.
    assert obj._init_args is None and obj._init_kwargs is None
    assert obj.init_args is None and obj.init_kwargs is None
    obj.value = 7
    restored = pickle.loads(pickle.dumps(obj))
    assert restored.value == 7 and restored.init_kwargs is None


# ---------------------------------------------------------------------------------------------------------------------
# Pickle format and reconstruction


def test_reduce_emits_reconstructor_and_meta(affine):
    layer = affine.Affine(3, seed=1)
    fields = layer.__reduce__()
    assert fields[0] is persistence._reconstruct_persistent_obj
    (meta,) = fields[1]
    assert fields[2] is None
    assert set(meta) == {'type', 'version', 'module_src', 'class_name', 'state'}
    assert (meta['type'], meta['version'], meta['class_name']) == ('class', 6, 'Affine')
    assert meta['module_src'] == AFFINE_SOURCE
    assert meta['state'] == layer.__dict__


def test_pickle_does_not_name_the_class(affine, pickle_globals):
    data = pickle.dumps(affine.Affine(3))
    found = pickle_globals(data)
    assert 'torch_utils.persistence._reconstruct_persistent_obj' in found
    assert not any('Affine' in name or affine.__name__ in name for name in found)


def test_round_trip_same_process(affine):
    layer = affine.Affine(4, seed=3, extra={'k': [1, 2]})
    restored = pickle.loads(pickle.dumps(layer))
    assert type(restored) is type(layer)  # Source already imported: the module is reused.
    x = _x([2, 4])
    assert torch.equal(restored(x), layer(x))
    assert restored.init_kwargs == {'seed': 3, 'extra': {'k': [1, 2]}}
    assert restored.init_args == (4,)
    assert torch.equal(copy.deepcopy(layer)(x), layer(x))


def test_identical_source_is_executed_once_different_source_twice(affine):
    state = affine.Affine(3).__dict__
    G, D, G_ema = (persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'Affine', dict(state))) for _ in range(3))
    assert type(G) is type(D) is type(G_ema)
    module = sys.modules[type(G).__module__]
    assert re.fullmatch(r'_imported_module_[0-9a-f]{32}', module.__name__)
    other = persistence._reconstruct_persistent_obj(_meta(SOURCE_B + '\n# another checkout\n', 'Affine', dict(state)))
    assert type(other).__module__ != module.__name__ and type(other).__module__ in sys.modules
    assert module.SCALE == 2.0
    x = _x([1, 3])
    assert torch.equal(G(x), x * state['_parameters']['weight'] * 2.0)  # SCALE of SOURCE_B, not of the file.
    # Pickling an instance of the exec'd class stores the same text, so it comes back as the same class.
    assert type(pickle.loads(pickle.dumps(G))) is type(G)


def test_plain_object_state_and_custom_setstate(affine):
    plain = persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'Plain', {'value': 4, '_init_args': (4,),
                                                                              '_init_kwargs': {}}))
    assert plain.__dict__ == {'value': 4, '_init_args': (4,), '_init_kwargs': {}}
    custom = persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'WithSetstate', {'value': 5}))
    assert custom.__dict__ == {'value': 5, 'restored_by_setstate': True}
    restored = pickle.loads(pickle.dumps(affine.Plain([1, 2])))
    assert restored.value == [1, 2] and restored.init_args == ([1, 2],)


def test_version_other_than_6_is_refused():
    with pytest.raises(ValueError, match=re.escape(
            "persistent object 'Affine' has persistence version 5; this loader reads version 6 (StyleGAN2-ADA, "
            "StyleGAN3, EDM). Use the code that wrote the pickle, or an import hook that converts it.")):
        persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'Affine', {}, version=5))


def test_unknown_class_name_is_refused():
    with pytest.raises(ValueError, match=re.escape("class 'Missing' is not defined by its pickled module source")):
        persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'Missing', {}))


def test_failing_source_is_not_cached():
    source = 'raise RuntimeError("broken source")\n'
    before = set(sys.modules)
    for _ in range(2):  # The second attempt must exec again (and fail again), not find a half-built module.
        with pytest.raises(RuntimeError, match='broken source'):
            persistence._reconstruct_persistent_obj(_meta(source, 'Affine', {}))
    assert set(sys.modules) == before
    assert source not in persistence._src_to_module


def test_import_hooks_patch_source_in_order(affine, monkeypatch):
    monkeypatch.setattr(persistence, '_import_hooks', [])
    calls = []

    def triple(meta):
        calls.append(('triple', meta.module_src.count('SCALE = 1.0')))
        meta.module_src = meta.module_src.replace('SCALE = 1.0', 'SCALE = 3.0')
        return meta

    def check(meta):
        calls.append(('check', meta.module_src.count('SCALE = 3.0')))
        assert isinstance(meta, dnnlib.EasyDict) and isinstance(meta.state, dnnlib.EasyDict)
        return meta

    assert persistence.import_hook(triple) is triple
    persistence.import_hook(check)
    layer = affine.Affine(3, seed=2)
    restored = pickle.loads(pickle.dumps(layer))
    assert calls == [('triple', 1), ('check', 1)]
    x = _x([3])
    assert torch.equal(restored(x), layer(x) * 3.0)
    assert type(restored).__module__.startswith('_imported_module_')


def test_import_hook_errors(monkeypatch):
    with pytest.raises(TypeError, match=re.escape("import_hook expects a callable hook(meta) -> meta, got 5 of type")):
        persistence.import_hook(5)
    monkeypatch.setattr(persistence, '_import_hooks', [lambda meta: None])
    with pytest.raises(TypeError, match='returned None; a hook must return the'):
        persistence._reconstruct_persistent_obj(_meta(SOURCE_B, 'Affine', {}))


def test_load_without_defining_source_tree(tmp_path, affine):
    """A subprocess whose sys.path lacks the temp module dir loads G/D/G_ema from the pickle and runs forward."""
    G, D = affine.Affine(4, seed=1), affine.Affine(4, seed=2)
    G_ema = copy.deepcopy(G)
    x = _x([2, 4], seed=3)
    (tmp_path / 'nets.pkl').write_bytes(pickle.dumps(dict(G=G, D=D, G_ema=G_ema)))
    torch.save(x, tmp_path / 'x.pt')
    script = textwrap.dedent(f'''
        import importlib.util, pickle, sys, torch
        assert importlib.util.find_spec({affine.__name__!r}) is None
        with open('nets.pkl', 'rb') as f:
            nets = pickle.load(f)
        modules = {{type(net).__module__ for net in nets.values()}}
        imported = [name for name in sys.modules if name.startswith('_imported_module_')]
        assert modules == set(imported) and len(imported) == 1, (modules, imported)
        x = torch.load('x.pt')
        torch.save({{key: net(x) for key, net in nets.items()}}, 'out.pt')
        print(nets['G'].init_kwargs)
    ''')
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'seed': 1}"
    out = torch.load(tmp_path / 'out.pt')
    for key, net in dict(G=G, D=D, G_ema=G_ema).items():
        assert torch.equal(out[key], net(x))


# ---------------------------------------------------------------------------------------------------------------------
# A pickle written exactly as NVIDIA's code writes it (see conftest.py)


def test_nvidia_pickle_names_exactly_the_expected_globals(nvidia_nets, pickle_globals):
    assert pickle.DEFAULT_PROTOCOL == 4  # What pickle.dump(data, f) in NVIDIA's training loop writes.
    assert pickle_globals(nvidia_nets.write()) == {
        'torch_utils.persistence._reconstruct_persistent_obj', 'dnnlib.util.EasyDict',
        'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', 'torch.storage._load_from_bytes',
        'collections.OrderedDict', 'numpy._core.multiarray.scalar', 'numpy.dtype'}


def test_nvidia_pickle_loads_with_same_outputs(nvidia_nets, exec_marker):
    x = torch.randn([2, 3, 8, 8], generator=torch.Generator().manual_seed(0))
    source = nvidia_nets.source + f'\n# written by another checkout {uuid.uuid4().hex}\n'
    data = nvidia_nets.write(source)
    loaded = pickle.loads(data)
    assert exec_marker.read_text().splitlines() == [type(loaded['G']).__module__]  # Exec'd once for G, D, G_ema.
    assert type(loaded['G']) is type(loaded['D']) is type(loaded['G_ema'])
    assert type(loaded['G']).__module__.startswith('_imported_module_')
    assert type(loaded['G']).__module__ == type(loaded['G'].conv0).__module__
    for key in ('G', 'D', 'G_ema'):
        expected = getattr(nvidia_nets, key)(x)
        assert expected.shape == (2, 3, 16, 16)
        assert torch.equal(loaded[key](x), expected)
        assert loaded[key].init_kwargs == getattr(nvidia_nets, key).init_kwargs
    assert type(loaded['G'].init_kwargs.conv_kwargs) is dnnlib.EasyDict
    assert loaded['training_set_kwargs'] == nvidia_nets.training_set_kwargs and loaded['augment_pipe'] is None
    assert type(pickle.loads(data)['G']) is type(loaded['G'])  # Same text again: no second exec.
    assert len(exec_marker.read_text().splitlines()) == 1


def test_nvidia_pickle_with_imported_source_reuses_module(nvidia_nets, exec_marker):
    loaded = pickle.loads(nvidia_nets.write())
    assert type(loaded['G']) is type(nvidia_nets.G)
    assert not exec_marker.exists()
    assert persistence._module_to_src[nvidia_nets.module] == nvidia_nets.source

"""Tests for torch_utils.safe_pickle: reading network pickles without executing anything from them."""

import collections
import hashlib
import io
import pickle
import re
import sys
import uuid

import numpy as np
import pytest
import torch

import dnnlib
from temp_modules import import_source
from torch_utils import persistence, safe_pickle
from torch_utils.safe_pickle import PersistentRecord, UnsafePickleError, iter_records, safe_load

# Persistent modules nesting plain torch.nn containers (as EDM and user code do), written to a temp module file.
NESTED_SOURCE = '''"""Test module: persistent modules with torch.nn containers inside."""
import numpy as np
import torch

from torch_utils import persistence


@persistence.persistent_class
class Leaf(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(features, dtype=torch.float32))
        self.weight_gain = np.float64(0.125)


@persistence.persistent_class
class Trunk(torch.nn.Module):
    def __init__(self, features, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(features, features), Leaf(features), None])
        self.heads = torch.nn.ModuleDict({'seq': torch.nn.Sequential(torch.nn.Linear(features, 2, bias=False),
                                                                     torch.nn.ReLU(), Leaf(2))})
        self.register_buffer('running', torch.full([features], 2.0))
        self.register_buffer('cache', torch.zeros([features]), persistent=False)
        self.act_gain = np.float64(np.sqrt(2))


@persistence.persistent_class
class OptOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self._record_init_args = False
'''


@pytest.fixture(scope='module')
def nested(tmp_path_factory):
    return import_source(tmp_path_factory.mktemp('nested'), NESTED_SOURCE, 'safe_nested')


def _load_bytes(data):
    return safe_load(io.BytesIO(data))


def _assert_same_state(record, module):
    expected = module.state_dict()
    assert list(record.state_dict) == list(expected)
    for key, value in expected.items():
        assert type(record.state_dict[key]) is torch.Tensor, key
        assert record.state_dict[key].dtype == value.dtype and torch.equal(record.state_dict[key], value), key


def _refusal(qualified):
    return (f"safe_load refused the global '{qualified}': it is not on the allow-list of data-only globals. Loading "
            f"this pickle with the trusted loader (pickle.load) would let it call '{qualified}', i.e. run code; do "
            "that only if you trust the file.")


# ---------------------------------------------------------------------------------------------------------------------
# NVIDIA-format snapshot (conftest.py writes it independently of our persistent_class)


def test_nvidia_snapshot_is_read_without_executing_source(nvidia_nets, exec_marker):
    source = nvidia_nets.source + f'\n# written by another checkout {uuid.uuid4().hex}\n'
    data = nvidia_nets.write(source)
    before = set(sys.modules)
    loaded = _load_bytes(data)
    assert not exec_marker.exists()  # pickle.load of the same bytes execs the source (test_persistence proves it).
    assert {name for name in set(sys.modules) - before if not name.startswith('torch.')} == set()
    assert set(loaded) == {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}
    assert loaded['augment_pipe'] is None and loaded['training_set_kwargs'] == nvidia_nets.training_set_kwargs
    for key in ('G', 'D', 'G_ema'):
        record, net = loaded[key], getattr(nvidia_nets, key)
        assert type(record) is PersistentRecord
        assert record.class_name == 'ToyNet'
        assert record.module_src == source
        assert record.module_src_hash == hashlib.sha256(source.encode('utf-8')).hexdigest()
        assert record.init_args == net.init_args and record.init_kwargs == net.init_kwargs
        _assert_same_state(record, net)
        assert 'scratch' not in record.state_dict  # Non-persistent buffer.
        assert 'conv0.unused_bias' not in record.state_dict  # None parameter.
        assert record.attrs == {'img_channels': 3, 'skip_gain': 0.5}
        assert type(record.attrs['skip_gain']) is np.float64
    conv_kwargs = loaded['G'].init_kwargs['conv_kwargs']
    assert isinstance(conv_kwargs, safe_pickle.PickledEasyDict) and not isinstance(conv_kwargs, dnnlib.EasyDict)
    assert conv_kwargs == {'up': 2, 'activation': 'lrelu'}
    assert loaded['D'].init_args == (3, 2) and loaded['G'].init_args == ()
    assert [path for path, _ in iter_records(loaded)] == ['G', 'D', 'G_ema']


@pytest.mark.parametrize('protocol', [2, 3, 5])
def test_nvidia_snapshot_other_protocols(nvidia_nets, protocol, pickle_globals):
    data = nvidia_nets.write(protocol=protocol)
    loaded = _load_bytes(data)
    _assert_same_state(loaded['G_ema'], nvidia_nets.G_ema)
    assert loaded['D'].init_kwargs == nvidia_nets.D.init_kwargs
    assert ('_codecs.encode' in pickle_globals(data)) == (protocol == 2)  # Protocol 2 spells bytes this way.


# ---------------------------------------------------------------------------------------------------------------------
# Refusals


def test_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / 'pwned'
    data = b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.'
    with pytest.raises(UnsafePickleError) as info:
        _load_bytes(data)
    assert str(info.value) == _refusal('os.system')
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()


class _Evil:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def test_refuses_builtins_eval_and_runs_nothing(tmp_path, pickle_globals):
    marker = tmp_path / 'pwned'
    data = pickle.dumps({'G': _Evil(f'open({str(marker)!r}, "w").close()')}, protocol=4)
    assert 'builtins.eval' in pickle_globals(data)
    with pytest.raises(UnsafePickleError, match=re.escape(_refusal('builtins.eval'))):
        _load_bytes(data)
    assert not marker.exists()


@pytest.mark.parametrize('module,name', [
    ('torch', 'load'),  # Only torch dtypes resolve under `torch.`.
    ('torch.nn.functional', 'relu'),
    ('torch.nn.modules.linear', 'F'),  # A module imported into torch.nn.modules.linear, not a class defined there.
    ('torch.nn.modules.linear', 'Module'),  # Defined elsewhere and imported into torch.nn.modules.linear.
    ('torch_utils.persistence', 'persistent_class'),
    ('numpy.core.numeric', 'scalar'),
    ('dnnlib.tflib.network', 'Network'),
    ('builtins', 'getattr'),
])
def test_refuses_names_outside_the_allow_list(module, name):
    with pytest.raises(UnsafePickleError, match=re.escape(_refusal(f'{module}.{name}'))):
        _load_bytes(f'c{module}\n{name}\n.'.encode())


def test_nested_storage_blob_goes_through_weights_only_loader(tmp_path):
    marker = tmp_path / 'pwned'
    inner = b'cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.'
    data = b'ctorch.storage\n_load_from_bytes\n(C' + bytes([len(inner)]) + inner + b'tR.'
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        _load_bytes(data)
    assert not marker.exists()


def test_codecs_encode_only_latin1():
    assert _load_bytes(b'c_codecs\nencode\n(Vab\nVlatin1\ntR.') == b'ab'
    with pytest.raises(pickle.UnpicklingError, match=re.escape("_codecs.encode is only accepted as encode(str, 'lat")):
        _load_bytes(b'c_codecs\nencode\n(Vab\nVutf-16\ntR.')


class _OldVersion:
    def __reduce__(self):
        meta = dict(type='class', version=5, module_src='', class_name='G', state={})
        return persistence._reconstruct_persistent_obj, (meta,), None


def test_persistent_version_other_than_6_is_refused():
    data = pickle.dumps(_OldVersion())
    with pytest.raises(ValueError, match=re.escape(
            "persistent object 'G' has version 5 and type 'class'; the safe loader reads version 6 objects of type "
            "'class'")):
        _load_bytes(data)


# ---------------------------------------------------------------------------------------------------------------------
# torch.nn nesting, numpy, tensors


def test_module_dict_and_list_nesting(nested):
    trunk = nested.Trunk(3, seed=1)
    record = _load_bytes(pickle.dumps({'net': trunk}))['net']
    _assert_same_state(record, trunk)
    assert 'layers.1.weight' in record.state_dict and 'heads.seq.2.weight' in record.state_dict
    assert 'cache' not in record.state_dict
    assert record.class_name == 'Trunk' and record.init_kwargs == {'seed': 1} and record.init_args == (3,)
    assert record.attrs == {'act_gain': np.sqrt(2)} and type(record.attrs['act_gain']) is np.float64


def test_plain_torch_module_becomes_stub_record(nested):
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), nested.Leaf(3))
    record = _load_bytes(pickle.dumps(seq))
    assert isinstance(record, PersistentRecord)
    assert record.class_name == 'torch.nn.modules.container.Sequential'
    assert record.module_src_hash is None and record.module_src is None
    assert record.init_args == () and record.init_kwargs == {}
    _assert_same_state(record, seq)
    linear = _load_bytes(pickle.dumps(seq[0]))
    assert linear.class_name == 'torch.nn.modules.linear.Linear'
    assert linear.attrs == {'in_features': 2, 'out_features': 3}


def test_opt_out_records_empty_init_args(nested):
    record = _load_bytes(pickle.dumps(nested.OptOut()))
    assert record.init_args == () and record.init_kwargs == {} and record.class_name == 'OptOut'


def test_numpy1_writer_name_for_scalars(nested, pickle_globals):
    data = pickle.dumps({'leaf': nested.Leaf(2), 'x': np.float64(-1.25)}, protocol=2)
    assert b'numpy._core.multiarray\nscalar' in data
    data = data.replace(b'cnumpy._core.multiarray\nscalar\n', b'cnumpy.core.multiarray\nscalar\n')
    assert 'numpy.core.multiarray.scalar' in pickle_globals(data)
    assert not any(name.startswith('numpy._core') for name in pickle_globals(data))
    loaded = _load_bytes(data)
    assert type(loaded['x']) is np.float64 and loaded['x'] == -1.25
    assert type(loaded['leaf'].attrs['weight_gain']) is np.float64 and loaded['leaf'].attrs['weight_gain'] == 0.125


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_numpy_values(protocol):
    values = {'f64': np.float64(0.1), 'f32': np.float32(3.5), 'i8': np.int8(-3),
              'array': np.arange(6, dtype=np.float32).reshape(2, 3), 'fortran': np.asfortranarray(np.eye(2)[:, ::-1])}
    loaded = _load_bytes(pickle.dumps({**values, 'dtype': np.dtype('>f2')}, protocol=protocol))
    assert loaded['dtype'] == np.dtype('>f2')
    for key, value in values.items():
        assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape and np.array_equal(loaded[key], value), key
    assert loaded['fortran'].flags.f_contiguous


@pytest.mark.parametrize('protocol', [2, 4])
def test_tensors_come_back_as_plain_cpu_tensors(protocol):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn([4, 5], generator=gen, dtype=torch.float64)
    tagged, tagged_param = torch.ones(2), torch.nn.Parameter(torch.zeros(3))
    tagged.note, tagged_param.note = 'x', 'y'  # Python attributes: torch pickles these via *_with_state / from_type.
    values = {'view': base[1:, ::2], 'half': base.half(), 'int': torch.arange(5), 'bool': base > 0,
              'param': torch.nn.Parameter(base.float()), 'tagged': tagged, 'tagged_param': tagged_param}
    loaded = _load_bytes(pickle.dumps(values, protocol=protocol))
    for key, value in values.items():
        assert type(loaded[key]) is torch.Tensor and loaded[key].device.type == 'cpu', key
        assert loaded[key].dtype == value.dtype and loaded[key].stride() == value.stride(), key
        assert torch.equal(loaded[key], value.detach()), key
        assert not loaded[key].requires_grad, key


def test_containers_and_dtypes(pickle_globals):
    values = {'od': collections.OrderedDict(b=1, a=2), 'set': {1, 2}, 'fs': frozenset({'x'}), 'dtype': torch.bfloat16,
              'tuple': (1, 'a', None, 2.5, b'\x00')}
    for protocol in (2, 4):
        data = pickle.dumps(values, protocol=protocol)
        loaded = _load_bytes(data)
        assert loaded == values and type(loaded['od']) is collections.OrderedDict
        assert list(loaded['od']) == ['b', 'a'] and loaded['dtype'] is torch.bfloat16
    assert 'torch.bfloat16' in pickle_globals(data)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and helpers


def test_accepts_paths_and_binary_files(tmp_path, nested):
    path = tmp_path / 'leaf.pkl'
    path.write_bytes(pickle.dumps({'leaf': nested.Leaf(2)}))
    for source in (path, str(path)):
        assert safe_load(source)['leaf'].class_name == 'Leaf'
    with open(path, 'rb') as f:
        assert safe_load(f)['leaf'].state_dict['weight'].tolist() == [0.0, 1.0]


def test_rejects_text_files_and_other_types(tmp_path):
    path = tmp_path / 'x.pkl'
    path.write_bytes(pickle.dumps(1))
    with open(path, 'r') as f:
        with pytest.raises(TypeError, match='safe_load needs a binary file object, got text-mode'):
            safe_load(f)
    with pytest.raises(TypeError, match=re.escape('safe_load expects a path or a binary file object, got int')):
        safe_load(3)


def test_iter_records_paths(nested):
    leaf = nested.Leaf(1)
    loaded = _load_bytes(pickle.dumps({'nets': [leaf, {'inner': leaf}], 'pair': (1, leaf), 'n': 1}))
    paths = [path for path, _ in iter_records(loaded)]
    assert paths == ['nets[0]', 'nets[1].inner', 'pair[1]']
    assert all(record is loaded['nets'][0] for _, record in iter_records(loaded))  # Pickle memo: one record.
    assert list(iter_records(loaded['pair'][1])) == [('', loaded['pair'][1])]

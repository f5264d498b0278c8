"""Fixtures for the persistence / safe_pickle tests: a network pickle written exactly as NVIDIA's code writes it.

The pickle is produced by a `pickle.Pickler` whose `reducer_override` builds the version-6 meta dict itself,
independently of `persistent_class.__reduce__`, from a small StyleGAN-style module source (`NETS_SOURCE`).
The source appends its module name to the file named by $PERSISTENCE_TEST_MARKER when it is executed, so a
test can tell whether a loader ran it.
"""

import copy
import io
import pickle
import pickletools
import types

import pytest

import dnnlib
from temp_modules import import_source
from torch_utils import persistence

MARKER_ENV = 'PERSISTENCE_TEST_MARKER'

NETS_SOURCE = '''"""Tiny networks in the style of StyleGAN2-ADA training/networks.py (test fixture)."""
import os

import numpy as np
import torch

import dnnlib
from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

# Side effect: record every execution of this text, so tests can prove whether a loader ran it.
if os.environ.get('PERSISTENCE_TEST_MARKER'):
    with open(os.environ['PERSISTENCE_TEST_MARKER'], 'a') as _marker:
        _marker.write(__name__ + '\\n')


@persistence.persistent_class
class ToyConv(torch.nn.Module):
    def __init__(self, in_channels, out_channels, up=1, activation='lrelu', seed=0):
        super().__init__()
        self.in_channels = in_channels
        self.up = up
        self.activation = activation
        self.weight_gain = np.float64(1 / np.sqrt(in_channels * 3 * 3))
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 3, 3], generator=gen))
        self.bias = torch.nn.Parameter(torch.randn([out_channels], generator=gen))
        self.register_parameter('unused_bias', None)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))

    def forward(self, x):
        misc.assert_shape(x, [None, self.in_channels, None, None])
        w = self.weight * self.weight_gain
        x = conv2d_resample.conv2d_resample(x=x, w=w, f=self.resample_filter, up=self.up, padding=1,
                                            flip_weight=(self.up == 1))
        return bias_act.bias_act(x, self.bias, act=self.activation)


@persistence.persistent_class
class ToyNet(torch.nn.Module):
    def __init__(self, img_channels, hidden, conv_kwargs={}, seed=0):
        super().__init__()
        self.img_channels = img_channels
        self.conv0 = ToyConv(img_channels, hidden, seed=seed, **conv_kwargs)
        self.conv1 = ToyConv(hidden, img_channels, activation='linear', seed=seed + 1)
        gen = torch.Generator().manual_seed(seed + 2)
        self.mix = torch.nn.Parameter(torch.randn([1, img_channels, 1, 1], generator=gen))
        self.register_buffer('w_avg', torch.randn([hidden], generator=gen))
        self.register_buffer('scratch', torch.ones([hidden]), persistent=False)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))
        self.skip_gain = np.float64(0.5)

    def forward(self, x):
        misc.assert_shape(x, [None, self.img_channels, None, None])
        y = self.conv1(self.conv0(x))
        skip = upfirdn2d.upsample2d(x, self.resample_filter)
        return fma.fma(y, self.mix, skip * self.skip_gain)
'''


class NvidiaStylePickler(pickle.Pickler):
    """Writes modules of one fixture module the way NVIDIA's persistence does, with a chosen module source."""

    def __init__(self, file, module_name, module_src, protocol):
        super().__init__(file, protocol=protocol)
        self.module_name = module_name
        self.module_src = module_src

    def reducer_override(self, obj):
        # Every class of the fixture module is persistent there, modules and plain objects (EDM's loss_fn) alike.
        if type(obj).__module__ == self.module_name and hasattr(obj, '__dict__'):
            meta = dict(type='class', version=6, module_src=self.module_src, class_name=type(obj).__name__,
                        state=obj.__dict__)
            return persistence._reconstruct_persistent_obj, (meta,), None
        return NotImplemented


@pytest.fixture(scope='session')
def nvidia_nets(tmp_path_factory):
    """The fixture module (imported from a temp file), G / D / G_ema built from it and a snapshot pickle writer.

    `write(module_src, protocol)` returns the bytes of {G, D, G_ema, training_set_kwargs, augment_pipe=None}
    pickled NVIDIA-style with `module_src` as the stored source.
    """
    module = import_source(tmp_path_factory.mktemp('nvidia_nets'), NETS_SOURCE, 'nvfixture_nets')
    G = module.ToyNet(img_channels=3, hidden=4, conv_kwargs=dnnlib.EasyDict(up=2, activation='lrelu'), seed=0)
    D = module.ToyNet(3, 2, conv_kwargs=dnnlib.EasyDict(up=2, activation='relu'), seed=10)
    G_ema = copy.deepcopy(G)
    for net in (G, D, G_ema):
        net.eval().requires_grad_(False)
    training_set_kwargs = dict(class_name='training.dataset.ImageFolderDataset', path='data.zip', resolution=8)

    def write(module_src=NETS_SOURCE, protocol=4):
        snapshot = dict(G=G, D=D, G_ema=G_ema, training_set_kwargs=training_set_kwargs, augment_pipe=None)
        buffer = io.BytesIO()
        NvidiaStylePickler(buffer, module.__name__, module_src, protocol).dump(snapshot)
        return buffer.getvalue()

    return types.SimpleNamespace(module=module, source=NETS_SOURCE, G=G, D=D, G_ema=G_ema,
                                 training_set_kwargs=training_set_kwargs, write=write)


@pytest.fixture
def exec_marker(tmp_path, monkeypatch):
    """Path of the file that the fixture source appends its module name to whenever it is executed."""
    path = tmp_path / 'exec_marker.txt'
    monkeypatch.setenv(MARKER_ENV, str(path))
    return path


def _pickle_globals(data: bytes) -> set:
    """Return every 'module.name' global a pickle references, read with pickletools (nothing is unpickled)."""
    found, memo, pushed = set(), {}, []
    last = None  # The string the previous opcode pushed, if it pushed one (what MEMOIZE / PUT would store).
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
        elif op.name == 'STACK_GLOBAL':
            found.add(f'{pushed[-2]}.{pushed[-1]}')
        if op.name in ('MEMOIZE', 'PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[len(memo) if op.name == 'MEMOIZE' else arg] = last
            continue
        if op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE'):
            last = arg
        elif op.name in ('GET', 'BINGET', 'LONG_BINGET'):
            last = memo.get(arg)
        else:
            last = None
        if op.name not in ('PROTO', 'FRAME'):
            pushed.append(last)
    return found


@pytest.fixture
def pickle_globals():
    """Function bytes -> set of 'module.name' globals referenced by the pickle (via pickletools)."""
    return _pickle_globals


@pytest.fixture
def nvidia_dumps(tmp_path):
    """Function (source, build) -> (objects, bytes): import `source` from a temp file, build objects, pickle them.

    `build(module)` returns the object to pickle (e.g. a snapshot dict). The pickle is written NVIDIA-style with the
    source text plus a trailing comment, so loading it execs a fresh module instead of reusing the imported one.
    """
    def dump(source, build, protocol=4):
        module = import_source(tmp_path, source, 'nvfixture_src')
        objects = build(module)
        buffer = io.BytesIO()
        NvidiaStylePickler(buffer, module.__name__, source + '\n# reloaded copy\n', protocol).dump(objects)
        return objects, buffer.getvalue()
    return dump

"""Safe reader for network pickles in NVIDIA's persistence format (StyleGAN2-ADA, StyleGAN3, EDM, and ours).

`pickle.load` on such a file execs the module source stored in it, and any pickle can name any callable.
`safe_load` instead uses a restricted unpickler: only an explicit allow-list of data-building globals
resolves, each to a checked equivalent, and every persistent object (and every plain torch.nn module) comes
back as a `PersistentRecord` (class name, sha256 of its source, constructor arguments, state dict) without a
line of the stored code running. Formats: docs/spec/nvidia-pickles.md section 1.
"""

import _compat_pickle
import collections
import dataclasses
import hashlib
import io
import os
import pickle
import sys
from typing import Any, Iterator

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle names a global outside the safe loader's allow-list."""


@dataclasses.dataclass(eq=False)
class PersistentRecord:
    """What a persistent object (or plain torch.nn module) in a pickle holds, read without running its code.

    Compared by identity (eq=False): the fields hold tensors, for which `==` is elementwise.
    """
    class_name: str               # 'Generator', or the qualified name for torch.nn ('torch.nn.modules.linear.Linear').
    module_src_hash: str | None   # sha256 hex digest of the UTF-8 module source; None for torch.nn modules.
    init_args: tuple              # Positional constructor arguments; () when not recorded (EDM opt-out, torch.nn).
    init_kwargs: dict             # Keyword constructor arguments; {} when not recorded.
    state_dict: dict = dataclasses.field(repr=False)  # Dotted name -> tensor, as nn.Module.state_dict() would give.
    module_src: str | None = dataclasses.field(default=None, repr=False)  # The stored source text, never executed.
    attrs: dict = dataclasses.field(default_factory=dict, repr=False)    # Other plain attributes, e.g. weight_gain.


class PickledEasyDict(dict):
    """Plain dict standing in for `dnnlib.util.EasyDict` (keeps the information that the value was one)."""


class _TorchModuleRecord(PersistentRecord):
    """Record for a plain torch.nn module: pickle creates it empty (NEWOBJ) and fills it from its state (BUILD)."""
    _torch_class_name = ''  # Set on the per-class subclasses made by _torch_module_stub.

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(_record_from_state(self._torch_class_name, None, state).__dict__)


# Attributes of an nn.Module's __dict__ that are torch bookkeeping, not user attributes.
_MODULE_INTERNALS = frozenset(torch.nn.Module().__dict__) | {'_init_args', '_init_kwargs'}
_TENSOR_TYPE_MARKER = object()  # Stands in for the `torch.Tensor` global, accepted only by _rebuild_from_type_v2.
_TORCH_STUBS: dict = {}  # 'torch.nn.modules.x.Name' -> cached stub class.


def _record_from_state(class_name: str, module_src: str | None, state: Any) -> PersistentRecord:
    """Build a PersistentRecord from an object's pickled __dict__, flattening submodules into dotted names."""
    if not isinstance(state, dict):
        raise ValueError(f'state of {class_name!r} is {type(state).__name__}; expected a dict')
    state_dict = {}
    params = state.get('_parameters') or {}
    skip = state.get('_non_persistent_buffers_set') or set()
    buffers = {name: value for name, value in (state.get('_buffers') or {}).items() if name not in skip}
    for name, value in [*params.items(), *buffers.items()]:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{class_name}.{name} is {type(value).__name__}; expected a tensor')
        state_dict[name] = value
    for child_name, child in (state.get('_modules') or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise ValueError(f'submodule {class_name}.{child_name} is {type(child).__name__}; expected a record')
        state_dict.update({f'{child_name}.{key}': value for key, value in child.state_dict.items()})
    attrs = {key: value for key, value in state.items()
             if key not in _MODULE_INTERNALS and not (key.startswith('_') and 'hooks' in key)}  # Older torch hooks.
    init_args = state.get('_init_args')
    init_kwargs = state.get('_init_kwargs')
    return PersistentRecord(
        class_name=class_name,
        module_src_hash=None if module_src is None else hashlib.sha256(module_src.encode('utf-8')).hexdigest(),
        init_args=tuple(init_args) if init_args is not None else (),
        init_kwargs=init_kwargs if init_kwargs is not None else {},
        state_dict=state_dict, module_src=module_src, attrs=attrs)


def _persistent_record(meta: Any) -> PersistentRecord:
    """Safe stand-in for `torch_utils.persistence._reconstruct_persistent_obj`: record, never exec."""
    if not isinstance(meta, dict):
        raise ValueError(f'persistent object meta is {type(meta).__name__}; expected a dict')
    class_name = meta.get('class_name')
    if meta.get('version') != 6 or meta.get('type') != 'class':
        raise ValueError(f"persistent object {class_name!r} has version {meta.get('version')!r} and type "
                         f"{meta.get('type')!r}; the safe loader reads version 6 objects of type 'class'")
    if not isinstance(class_name, str) or not isinstance(meta.get('module_src'), str):
        raise ValueError('persistent object meta needs str class_name and module_src')
    return _record_from_state(class_name, meta['module_src'], meta.get('state'))


def _load_storage(blob: Any) -> Any:
    """Safe `torch.storage._load_from_bytes`: the nested torch.save blob goes through torch's weights-only loader."""
    if not isinstance(blob, (bytes, bytearray)):
        raise pickle.UnpicklingError(f'tensor storage blob is {type(blob).__name__}; expected bytes')
    return torch.load(io.BytesIO(blob), weights_only=True, map_location='cpu')


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Safe `torch._utils._rebuild_tensor_v2`: view a loaded storage as a plain CPU tensor (hooks/metadata dropped)."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f'tensor storage is {type(storage).__name__}; expected a torch storage')
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise pickle.UnpicklingError('tensor offset, size and stride must be integers')
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Safe `_rebuild_parameter(_with_state)`: Parameters come back as the plain tensor they wrap."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f'parameter data is {type(data).__name__}; expected a tensor')
    return data


def _rebuild_from_type(func, new_type, args, state):
    """Safe `torch._tensor._rebuild_from_type_v2`, for plain tensors that carry Python attributes (dropped)."""
    if func not in (_rebuild_tensor, _rebuild_parameter) or new_type is not _TENSOR_TYPE_MARKER:
        raise pickle.UnpicklingError('_rebuild_from_type_v2 is only accepted for plain torch.Tensor')
    return func(*args)


def _numpy_scalar(dtype, data=None):
    """Safe `numpy.core.multiarray.scalar`: a numpy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError('numpy scalar needs a non-object dtype and raw bytes')
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype, shape, typecode):
    """Safe `numpy.core.multiarray._reconstruct`: an empty ndarray that BUILD then fills."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError('numpy _reconstruct is only accepted for numpy.ndarray')
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _numpy_frombuffer(buffer, dtype, shape, order):
    """Safe `numpy._core.numeric._frombuffer` (protocol 5 arrays): a writable copy of the buffer, layout kept."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError('numpy _frombuffer needs a non-object dtype')
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy(order='A')


def _codecs_encode(text, encoding='utf-8'):
    """Safe `_codecs.encode`: protocol-2 pickles spell bytes as encode(str, 'latin1'); nothing else is allowed."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError("_codecs.encode is only accepted as encode(str, 'latin1')")
    return text.encode('latin1')


# NumPy's pickle helpers, each under its NumPy 1 writer name (numpy.core.*) and its NumPy 2 name (numpy._core.*).
_NUMPY_HELPERS = {'multiarray.scalar': _numpy_scalar, 'multiarray._reconstruct': _numpy_reconstruct,
                  'numeric._frombuffer': _numpy_frombuffer}


# Exact globals accepted, each mapped to a checked equivalent (verified with pickletools on torch 2.13 / NumPy 2.4
# pickles, protocols 2 to 5). Python classes never appear here: they are either records or refused.
_ALLOWED = {
    'torch_utils.persistence._reconstruct_persistent_obj': _persistent_record,
    'dnnlib.util.EasyDict': PickledEasyDict,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'torch._utils._rebuild_parameter_with_state': _rebuild_parameter,
    'torch._tensor._rebuild_from_type_v2': _rebuild_from_type,
    'torch.Tensor': _TENSOR_TYPE_MARKER,
    'torch.storage._load_from_bytes': _load_storage,
    'collections.OrderedDict': collections.OrderedDict,
    'builtins.set': set,
    'builtins.frozenset': frozenset,
    '_codecs.encode': _codecs_encode,
    'numpy.dtype': np.dtype,
    'numpy.ndarray': np.ndarray,
    **{f'{package}.{name}': helper for package in ('numpy.core', 'numpy._core')
       for name, helper in _NUMPY_HELPERS.items()},
}


def _torch_module_stub(module: str, name: str) -> type | None:
    """Return a record class standing in for a torch.nn.modules class, or None if `module.name` is not one."""
    qualified = f'{module}.{name}'
    if qualified in _TORCH_STUBS:
        return _TORCH_STUBS[qualified]
    # Look the class up only in already imported torch.nn modules' namespaces: nothing is imported or instantiated.
    namespace = vars(sys.modules[module]) if module.startswith('torch.nn.modules.') and module in sys.modules else {}
    real = namespace.get(name)
    if not (isinstance(real, type) and issubclass(real, torch.nn.Module) and real.__module__ == module):
        return None
    stub = type(f'TorchModuleRecord[{qualified}]', (_TorchModuleRecord,), {'_torch_class_name': qualified})
    _TORCH_STUBS[qualified] = stub
    return stub


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals (and torch.nn module stubs); see the module doc."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 era pickles (protocol <= 2) name e.g. __builtin__.set; translate like pickle itself does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f'{module}.{name}'
        if qualified in _ALLOWED:
            return _ALLOWED[qualified]
        if module == 'torch' and isinstance(vars(torch).get(name), torch.dtype):  # vars(): no lazy submodule import.
            return vars(torch)[name]
        stub = _torch_module_stub(module, name)
        if stub is not None:
            return stub
        raise UnsafePickleError(f'safe_load refused the global {qualified!r}: it is not on the allow-list of '
                                'data-only globals. Loading this pickle with the trusted loader (pickle.load) would '
                                f'let it call {qualified!r}, i.e. run code; do that only if you trust the file.')


def safe_load(f: Any) -> Any:
    """Unpickle `f` (a path or a binary file object) without running code from it; return the pickled structure.

    Persistent objects and plain torch.nn modules become PersistentRecords; tensors come back as plain CPU tensors.
    """
    if isinstance(f, (str, os.PathLike)):
        with open(f, 'rb') as file:
            return SafeUnpickler(file).load()
    if isinstance(f, io.TextIOBase):
        raise TypeError(f'safe_load needs a binary file object, got text-mode {f!r}; open it with mode "rb"')
    if not (hasattr(f, 'read') and hasattr(f, 'readline')):
        raise TypeError(f'safe_load expects a path or a binary file object, got {type(f).__name__}')
    return SafeUnpickler(f).load()


def iter_records(obj: Any, path: str = '') -> Iterator[tuple[str, PersistentRecord]]:
    """Yield (path, record) for each top-level record in a loaded pickle, e.g. ('G_ema', record).

    Walks dicts (path 'key' / 'parent.key'), lists and tuples (path 'parent[i]'); records are not descended into,
    so submodules are listed only through their parent's dotted state_dict names.
    """
    if isinstance(obj, PersistentRecord):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from iter_records(value, f'{path}.{key}' if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from iter_records(value, f'{path}[{i}]')

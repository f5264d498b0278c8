"""Persistent classes: objects whose pickles carry the source code of their defining module.

This is the persistence format of NVIDIA's StyleGAN2-ADA, StyleGAN3 and EDM (format version 6), which
SMaRt reuses so that their released network pickles load here. Decorating a class with `persistent_class`
makes its instances pickle as
`_reconstruct_persistent_obj({type: 'class', version: 6, module_src, class_name, state})`:
the pickle never names the class, so it loads without the original source tree. Loading runs the
stored source with `exec`; only load pickles you trust (see `torch_utils.safe_pickle` for a reader
that never runs code). The format is a contract: see docs/spec/nvidia-pickles.md section 1.
"""

import copy
import inspect
import sys
import types
import uuid
from typing import Any, Callable

import numpy as np
import torch

import dnnlib

_version = 6  # Persistence format written and accepted; v6 is shared by SG2-ADA, SG3 and EDM.

_decorators: set = set()  # Every class returned by persistent_class.
_import_hooks: list = []  # Callables meta -> meta, run in registration order before a class is rebuilt.
_module_to_src: dict = {}  # Module object -> its full source text (cached so inspect runs once per module).
_src_to_module: dict = {}  # Source text -> module, so identical text is exec'd only once per process.

# Leaf types that a persistent pickle can store and that safe_pickle can read back without running code.
_PLAIN_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)
_ARRAY_LEAF_TYPES = (np.ndarray, np.generic, np.dtype, torch.Tensor, torch.dtype)


def persistent_class(orig_class: type) -> type:
    """Make `orig_class` persistent: return a subclass of the same name whose pickles embed the module source.

    Instances record deep copies of their constructor arguments (`init_args`, `init_kwargs`) unless the
    class sets `self._record_init_args = False` before or during its __init__ (EDM's opt-out). A class that
    is already persistent is returned unchanged.
    """
    if not isinstance(orig_class, type):
        raise TypeError(f'persistent_class expects a class, got {orig_class!r} of type {type(orig_class).__name__}')
    if is_persistent(orig_class):
        return orig_class
    orig_module_src = _module_source(orig_class)
    orig_class_name = orig_class.__name__

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class_name

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Read the opt-out after the original init, so it may be a class attribute or set inside __init__.
            record = getattr(self, '_record_init_args', True)
            self._init_args = copy.deepcopy(args) if record else None
            self._init_kwargs = copy.deepcopy(kwargs) if record else None
            if record:
                _check_pickleable((self._init_args, self._init_kwargs), orig_class_name)

        @property
        def init_args(self) -> tuple | None:
            """Deep copy of the positional constructor arguments (None when the class opted out)."""
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict | None:
            """Deep copy of the keyword constructor arguments as an EasyDict (None when the class opted out)."""
            if self._init_kwargs is None:
                return None
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            # Start from the base reduction so subclasses' own state handling (e.g. __getstate__) is honoured,
            # then swap the reconstructor: the class is then rebuilt from source instead of by import path.
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None  # The state travels inside meta; a BUILD step would apply it twice.
            return tuple(fields)

    # Pickled code and user code look the class up by these names; keep them identical to the original.
    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator


def is_persistent(obj: Any) -> bool:
    """Return True if `obj` is a class made by `persistent_class` or an instance of one."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # Unhashable instances cannot be in the set; fall through to their type.
        pass
    return type(obj) in _decorators


def import_hook(hook: Callable[[dnnlib.EasyDict], dnnlib.EasyDict]) -> Callable:
    """Register `hook(meta) -> meta`, run on every persistent object before its source is loaded.

    Hooks run in registration order; each may patch e.g. `meta.module_src` and must return the meta.
    Returns `hook`, so this can also be used as a decorator.
    """
    if not callable(hook):
        raise TypeError(f'import_hook expects a callable hook(meta) -> meta, got {hook!r} of type '
                        f'{type(hook).__name__}')
    _import_hooks.append(hook)
    return hook


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Rebuild a persistent object from its pickled meta dict (called by pickle while loading).

    Runs the import hooks, loads (or reuses) the module for `meta.module_src`, creates the instance of
    `meta.class_name` without calling __init__ and restores `meta.state`. Returns the object.
    """
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise TypeError(f'import hook {hook!r} returned None; a hook must return the (possibly patched) meta')

    version = meta.get('version')
    if version != _version:
        raise ValueError(f"persistent object {meta.get('class_name')!r} has persistence version {version!r}; "
                         f'this loader reads version {_version} (StyleGAN2-ADA, StyleGAN3, EDM). '
                         'Use the code that wrote the pickle, or an import hook that converts it.')
    if meta.get('type') != 'class':
        raise ValueError(f"persistent object has type {meta.get('type')!r}; expected 'class'")

    module = _src_to_module_or_exec(meta.module_src)
    cls = module.__dict__.get(meta.class_name)
    if cls is None:
        raise ValueError(f'class {meta.class_name!r} is not defined by its pickled module source '
                         f'(module {module.__name__})')
    obj = cls.__new__(cls)
    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state)  # nn.Module.__setstate__ also adds hook dicts that older pickles lack.
    else:
        obj.__dict__.update(meta.state)
    return obj


def _module_source(cls: type) -> str:
    """Return the full source text of the module that defines `cls`, cached per module."""
    module = sys.modules.get(cls.__module__)
    if module is None:
        raise ValueError(f'persistent_class cannot record the source of class {cls.__qualname__!r}: its module '
                         f'{cls.__module__!r} is not in sys.modules')
    src = _module_to_src.get(module)
    if src is None:
        try:
            src = inspect.getsource(module)
        except (OSError, TypeError) as exc:
            raise ValueError(f'persistent_class cannot record the source of class {cls.__qualname__!r}: module '
                             f'{cls.__module__!r} has no readable source file (was the class defined in an '
                             'interactive session or by exec?). Define it in a .py file.') from exc
        _module_to_src[module] = src
        # Loading a pickle of this class in the same process then reuses the already imported module.
        _src_to_module.setdefault(src, module)
    return src


def _src_to_module_or_exec(src: str) -> types.ModuleType:
    """Return the module whose source text is exactly `src`, creating it with exec on first use."""
    if not isinstance(src, str):
        raise TypeError(f'persistent module source must be a str, got {type(src).__name__}')
    module = _src_to_module.get(src)
    if module is not None:
        return module
    name = f'_imported_module_{uuid.uuid4().hex}'
    module = types.ModuleType(name)
    # Register before exec: the source's own @persistent_class decorators look their source up in the cache,
    # because inspect cannot read the source of a module that only exists in memory.
    sys.modules[name] = module
    _module_to_src[module] = src
    _src_to_module[src] = module
    try:
        exec(compile(src, f'<persistent module {name}>', 'exec'), module.__dict__)
    except BaseException:
        # Do not cache a half-initialised module; a later load should retry (and fail loudly) again.
        del sys.modules[name], _module_to_src[module], _src_to_module[src]
        raise
    return module


def _check_pickleable(value: Any, class_name: str) -> None:
    """Raise TypeError if the recorded constructor arguments hold anything a persistent pickle cannot store."""
    def check(x: Any, path: str) -> None:
        if isinstance(x, _PLAIN_LEAF_TYPES) or isinstance(x, _ARRAY_LEAF_TYPES) or is_persistent(x):
            return
        if isinstance(x, (list, tuple, set, frozenset)):
            for i, item in enumerate(x):
                check(item, f'{path}[{i}]')
            return
        if isinstance(x, dict):
            for key, item in x.items():
                check(key, f'{path} key {key!r}')
                check(item, f'{path}[{key!r}]')
            return
        raise TypeError(f'{class_name}: constructor argument {path} has type {type(x).__module__}.'
                        f'{type(x).__qualname__}, which a persistent pickle cannot store; expected None, bool, '
                        'int, float, str, bytes, numpy arrays or scalars, torch tensors or dtypes, persistent '
                        'objects, or lists/tuples/dicts/sets of these')

    args, kwargs = value
    for i, item in enumerate(args):
        check(item, f'args[{i}]')
    for key, item in kwargs.items():
        check(item, key)

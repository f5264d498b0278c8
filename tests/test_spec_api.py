"""Every name that docs/spec/nvidia-pickles.md section 2 lists exists with the listed signature.

Pickled NVIDIA source calls these by name and keyword, so a renamed parameter or a changed default breaks
official pickles silently. The table below is transcribed from the spec; `...` means "required, no default".
"""

import importlib
import inspect

import numpy as np
import pytest

REQ = inspect.Parameter.empty
VAR = "*"   # *args
KW = "**"   # **kwargs

# (module, name) -> list of (param name, default); VAR / KW mark *args / **kwargs.
SIGNATURES = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): [("meta", REQ)],
    ("torch_utils.misc", "constant"): [("value", REQ), ("shape", None), ("dtype", None), ("device", None),
                                       ("memory_format", None)],
    ("torch_utils.misc", "assert_shape"): [("tensor", REQ), ("ref_shape", REQ)],
    ("torch_utils.misc", "profiled_function"): [("fn", REQ)],
    ("torch_utils.misc", "InfiniteSampler"): [("dataset", REQ), ("rank", 0), ("num_replicas", 1), ("shuffle", True),
                                              ("seed", 0), ("window_size", 0.5)],
    ("torch_utils.misc", "params_and_buffers"): [("module", REQ)],
    ("torch_utils.misc", "named_params_and_buffers"): [("module", REQ)],
    ("torch_utils.misc", "copy_params_and_buffers"): [("src_module", REQ), ("dst_module", REQ), ("require_all", False)],
    ("torch_utils.misc", "ddp_sync"): [("module", REQ), ("sync", REQ)],
    ("torch_utils.misc", "check_ddp_consistency"): [("module", REQ), ("ignore_regex", None)],
    ("torch_utils.misc", "print_module_summary"): [("module", REQ), ("inputs", REQ), ("max_nesting", 3),
                                                   ("skip_redundant", True)],
    ("torch_utils.ops.bias_act", "bias_act"): [("x", REQ), ("b", None), ("dim", 1), ("act", "linear"), ("alpha", None),
                                               ("gain", None), ("clamp", None), ("impl", "cuda")],
    ("torch_utils.ops.upfirdn2d", "setup_filter"): [("f", REQ), ("device", "cpu"), ("normalize", True),
                                                    ("flip_filter", False), ("gain", 1), ("separable", None)],
    ("torch_utils.ops.upfirdn2d", "upfirdn2d"): [("x", REQ), ("f", REQ), ("up", 1), ("down", 1), ("padding", 0),
                                                 ("flip_filter", False), ("gain", 1), ("impl", "cuda")],
    ("torch_utils.ops.upfirdn2d", "filter2d"): [("x", REQ), ("f", REQ), ("padding", 0), ("flip_filter", False),
                                                ("gain", 1), ("impl", "cuda")],
    ("torch_utils.ops.upfirdn2d", "upsample2d"): [("x", REQ), ("f", REQ), ("up", 2), ("padding", 0),
                                                  ("flip_filter", False), ("gain", 1), ("impl", "cuda")],
    ("torch_utils.ops.upfirdn2d", "downsample2d"): [("x", REQ), ("f", REQ), ("down", 2), ("padding", 0),
                                                    ("flip_filter", False), ("gain", 1), ("impl", "cuda")],
    ("torch_utils.ops.conv2d_resample", "conv2d_resample"): [("x", REQ), ("w", REQ), ("f", None), ("up", 1),
                                                             ("down", 1), ("padding", 0), ("groups", 1),
                                                             ("flip_weight", True), ("flip_filter", False)],
    ("torch_utils.ops.fma", "fma"): [("a", REQ), ("b", REQ), ("c", REQ)],
    ("torch_utils.ops.conv2d_gradfix", "conv2d"): [("input", REQ), ("weight", REQ), ("bias", None), ("stride", 1),
                                                   ("padding", 0), ("dilation", 1), ("groups", 1)],
    ("torch_utils.ops.conv2d_gradfix", "conv_transpose2d"): [("input", REQ), ("weight", REQ), ("bias", None),
                                                             ("stride", 1), ("padding", 0), ("output_padding", 0),
                                                             ("groups", 1), ("dilation", 1)],
    ("torch_utils.ops.conv2d_gradfix", "no_weight_gradients"): [("disable", True)],
    ("torch_utils.ops.grid_sample_gradfix", "grid_sample"): [("input", REQ), ("grid", REQ)],
    ("torch_utils.ops.filtered_lrelu", "filtered_lrelu"): [("x", REQ), ("fu", None), ("fd", None), ("b", None),
                                                           ("up", 1), ("down", 1), ("padding", 0),
                                                           ("gain", np.sqrt(2)), ("slope", 0.2), ("clamp", None),
                                                           ("flip_filter", False), ("impl", "cuda")],
    ("torch_utils.training_stats", "init_multiprocessing"): [("rank", REQ), ("sync_device", REQ)],
    ("torch_utils.training_stats", "report"): [("name", REQ), ("value", REQ)],
    ("torch_utils.training_stats", "report0"): [("name", REQ), ("value", REQ)],
    ("torch_utils.training_stats", "Collector"): [("regex", ".*"), ("keep_previous", True)],
    ("torch_utils.custom_ops", "get_plugin"): [("module_name", REQ), ("sources", REQ), (KW, None)],
    ("dnnlib.util", "Logger"): [("file_name", None), ("file_mode", "w"), ("should_flush", True)],
    ("dnnlib.util", "make_cache_dir_path"): [(VAR, None)],
    ("dnnlib.util", "construct_class_by_name"): [(VAR, None), ("class_name", None), (KW, None)],
    ("dnnlib.util", "call_func_by_name"): [(VAR, None), ("func_name", None), (KW, None)],
    ("dnnlib.util", "open_url"): [("url", REQ), ("cache_dir", None), ("num_attempts", 10), ("verbose", True),
                                  ("return_filename", False), ("cache", True)],
    ("dnnlib.util", "is_url"): [("obj", REQ), ("allow_file_urls", False)],
}

# Functions the spec lists with one positional argument whose name it leaves open.
ONE_ARG_FUNCTIONS = [
    ("torch_utils.persistence", "persistent_class"),
    ("torch_utils.persistence", "is_persistent"),
    ("torch_utils.persistence", "import_hook"),
    ("dnnlib.util", "set_cache_dir"),
    ("dnnlib.util", "format_time"),
    ("dnnlib.util", "get_obj_by_name"),
]

# Names that must exist but whose signature the spec does not pin (flags, classes, aliases).
ATTRIBUTES = [
    ("torch_utils.misc", "suppress_tracer_warnings"),
    ("torch_utils.misc", "nan_to_num"),
    ("torch_utils.ops.bias_act", "activation_funcs"),
    ("torch_utils.ops.upfirdn2d", "_parse_padding"),
    ("torch_utils.ops.upfirdn2d", "_get_filter_size"),
    ("torch_utils.ops.conv2d_gradfix", "enabled"),
    ("torch_utils.ops.conv2d_gradfix", "weight_gradients_disabled"),
    ("torch_utils.ops.grid_sample_gradfix", "enabled"),
    ("torch_utils.custom_ops", "verbosity"),
    ("dnnlib.util", "EasyDict"),
    ("dnnlib", "EasyDict"),
    ("dnnlib", "make_cache_dir_path"),
]


def _check_params(obj, expected):
    params = list(inspect.signature(obj).parameters.values())
    kinds = {VAR: inspect.Parameter.VAR_POSITIONAL, KW: inspect.Parameter.VAR_KEYWORD}
    named = [p for p in params if p.kind not in kinds.values()]
    for name, default in expected:
        if name in kinds:
            assert any(p.kind == kinds[name] for p in params), f"missing {name} parameter"
            continue
        matching = [p for p in named if p.name == name]
        assert matching, f"missing parameter {name!r}; have {[p.name for p in params]}"
        actual = matching[0].default
        if isinstance(default, float):
            assert actual == pytest.approx(default), f"{name}: default {actual!r} != {default!r}"
        elif name == "device" and default == "cpu":
            assert str(actual) == "cpu", f"{name}: default {actual!r} != cpu"
        else:
            assert actual is default or actual == default, f"{name}: default {actual!r} != {default!r}"
    # The listed named parameters come first and in the listed order (positional callers rely on it).
    listed = [n for n, _ in expected if n not in kinds]
    assert [p.name for p in named][:len(listed)] == listed


@pytest.mark.parametrize("module_name,name", sorted(SIGNATURES), ids=lambda v: str(v))
def test_signature(module_name, name):
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f"{module_name}.{name} is missing"
    _check_params(getattr(module, name), SIGNATURES[(module_name, name)])


@pytest.mark.parametrize("module_name,name", ONE_ARG_FUNCTIONS, ids=lambda v: str(v))
def test_one_positional_argument(module_name, name):
    params = list(inspect.signature(getattr(importlib.import_module(module_name), name)).parameters.values())
    required = [p for p in params if p.default is REQ and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(required) == 1, f"{module_name}.{name} takes {[p.name for p in params]}"


@pytest.mark.parametrize("module_name,name", ATTRIBUTES, ids=lambda v: str(v))
def test_attribute_exists(module_name, name):
    assert hasattr(importlib.import_module(module_name), name)


def test_activation_table():
    from torch_utils.ops.bias_act import activation_funcs
    expected = {  # name: (def_alpha, def_gain, cuda_idx, ref, has_2nd_grad)
        "linear": (0, 1, 1, "", False), "relu": (0, np.sqrt(2), 2, "y", False),
        "lrelu": (0.2, np.sqrt(2), 3, "y", False), "tanh": (0, 1, 4, "y", True), "sigmoid": (0, 1, 5, "y", True),
        "elu": (0, 1, 6, "y", True), "selu": (0, 1, 7, "y", True), "softplus": (0, 1, 8, "y", True),
        "swish": (0, np.sqrt(2), 9, "x", True),
    }
    assert sorted(activation_funcs) == sorted(expected)
    for name, (alpha, gain, idx, ref, second) in expected.items():
        spec = activation_funcs[name]
        assert (spec.def_alpha, spec.cuda_idx, spec.ref, spec.has_2nd_grad) == (alpha, idx, ref, second), name
        assert spec.def_gain == pytest.approx(gain), name
        assert callable(spec.func)


def test_gradfix_flags_default_off():
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    assert conv2d_gradfix.enabled is False
    assert conv2d_gradfix.weight_gradients_disabled is False
    assert grid_sample_gradfix.enabled is False


def test_custom_ops_verbosity_values():
    from torch_utils import custom_ops
    assert custom_ops.verbosity in ("none", "brief", "full")

"""`legacy.load_network_pkl`, the entry point that StyleGAN2-ADA's companion tools and third-party scripts call.

    import dnnlib, legacy
    with dnnlib.util.open_url(network_pkl) as f:
        G = legacy.load_network_pkl(f)['G_ema']

returns the released dict layout: G, D, G_ema (networks or None), training_set_kwargs and augment_pipe (None when
the file has none), plus whatever else the snapshot holds (our snapshots add a training state). Unlike the released
module it is safe by default: the file is read by torch_utils.safe_pickle and the networks are rebuilt from our own
classes, so no code stored in the pickle runs. Pass trusted=True (or set SMART_TRUST_PICKLES=1 for a script that
cannot pass the argument) to unpickle normally, which runs the stored code: needed for network classes we do not
have, e.g. StyleGAN3's. TensorFlow-era pickles are not supported.
"""

import copy
import os
from typing import Any, BinaryIO

import dnnlib
from torch_utils import misc
from training import snapshot

TRUST_ENV = 'SMART_TRUST_PICKLES'  # '1' / 'true' makes trusted=None mean trusted; anything else (or unset) safe.


def _trusted_from_env() -> bool:
    value = os.environ.get(TRUST_ENV, '').strip().lower()
    if value in ('', '0', 'false', 'no'):
        return False
    if value in ('1', 'true', 'yes'):
        return True
    raise ValueError(f'${TRUST_ENV}={value!r}: expected 1/true/yes or 0/false/no')


def _with_fp16(key: str, net: Any) -> Any:
    """The network rebuilt with StyleGAN2-ADA's mixed-precision settings (num_fp16_res 4, conv_clamp 256), same
    weights; the same object when its settings already are those."""
    kwargs = copy.deepcopy(net.init_kwargs)
    if kwargs is None:
        raise ValueError(f'{key}: force_fp16 needs the recorded constructor arguments, but {type(net).__name__} '
                         'has none')
    if key.startswith('G'):
        kwargs.synthesis_kwargs = dnnlib.EasyDict(kwargs.get('synthesis_kwargs', {}))
        kwargs.synthesis_kwargs.update(num_fp16_res=4, conv_clamp=256)
    else:
        kwargs.update(num_fp16_res=4, conv_clamp=256)
    if kwargs == net.init_kwargs:
        return net
    new = type(net)(*net.init_args, **kwargs).eval().requires_grad_(False)
    misc.copy_params_and_buffers(net, new, require_all=True)
    return new


def load_network_pkl(f: str | os.PathLike | BinaryIO, force_fp16: bool = False,
                     trusted: bool | None = None) -> dict[str, Any]:
    """The snapshot dict (G, D, G_ema, training_set_kwargs, augment_pipe, ...) of a path, URL or binary file.

    force_fp16: rebuild G, D and G_ema with 4 fp16 resolutions and conv_clamp 256, as the released loader does.
    trusted: False = safe load (nothing from the file runs); True = plain unpickling; None = $SMART_TRUST_PICKLES.
    """
    if trusted is None:
        trusted = _trusted_from_env()
    data = snapshot.load_network_pkl(f, trusted=trusted)
    if force_fp16:
        for key in snapshot.NETWORK_KEYS:
            if data[key] is not None:
                data[key] = _with_fp16(key, data[key])
    return data

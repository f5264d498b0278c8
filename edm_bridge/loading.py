"""Load released diffusion models (EDM pickles, ADM and NCSNv2 checkpoints) as one frozen Denoiser for SMaRt.

EDM pickles (Karras et al. 2022; docs/spec/diffusion.md section 2) are dicts whose 'ema' entry is a persistent EDM
preconditioner. By default they are read with `torch_utils.safe_pickle`, which runs no code from the file: the
network is rebuilt from OUR classes (edm_bridge.edm_networks) with the recorded constructor kwargs and loaded with
a strict state dict. `trusted=True` unpickles normally instead, which executes the source stored in the pickle.
ADM checkpoints (Dhariwal & Nichol 2021) are plain state dicts, read with torch.load(weights_only=True); their
architecture comes from a preset (edm_bridge.adm). Official NCSNv2 checkpoint.pth lists are read the same way, with
their config.yml (edm_bridge.ncsnv2_checkpoint). Names from edm_bridge.registry resolve to URLs that go through
dnnlib.util.open_url (downloads are cached; a cached file is used offline).
"""

import os
import pickle
from typing import Any, BinaryIO

import torch

import dnnlib
from edm_bridge import adm, edm_networks, ncsnv2_checkpoint, registry, schedules
from edm_bridge.checks import check_tensors
from edm_bridge.denoiser import FrozenDenoiser
from torch_utils import finite, safe_pickle

# Preconditioners the safe path rebuilds: EDM's (edm_networks) and NCSNv2's (ncsnv2, written by train_dpm.py).
EDM_CLASSES = ('EDMPrecond', 'VPPrecond', 'VEPrecond', 'iDDPMPrecond', 'NCSNv2Precond')
_TRUST_HINT = ('if the pickle was written by other code, load it with trusted=True, which runs the code stored in '
               'it (only for files you trust)')
_ZIP_MAGIC = b'PK\x03\x04'  # torch.save's zip container (every checkpoint written since PyTorch 1.6).
# torch.save's legacy format (PyTorch < 1.6, e.g. checkpoints of 2020): a protocol-2 pickle of its magic number.
_LEGACY_TORCH_MAGIC = b'\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19'
_ADM_PREFIXES = ('time_embed.', 'input_blocks.', 'middle_block.', 'output_blocks.', 'label_emb.')  # guided-diffusion
_EXPECTED = ('expected an EDM network pickle, an ADM (guided-diffusion) checkpoint (a state dict with time_embed.*, '
             'input_blocks.*) or an NCSNv2 checkpoint.pth (a list [model state_dict, optimizer, epoch, step, EMA '
             'shadow]) with its config.yml')


def _plain(value: Any) -> Any:
    """The safe loader's containers -> what constructors expect (EasyDict for dicts, lists and tuples kept)."""
    if isinstance(value, dict):
        return dnnlib.EasyDict({k: _plain(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _safe_classes() -> dict[str, type]:
    """EDM_CLASSES name -> our class (ncsnv2 imported only here: most loads never need it)."""
    from edm_bridge import ncsnv2
    return {name: getattr(ncsnv2 if name == 'NCSNv2Precond' else edm_networks, name) for name in EDM_CLASSES}


def _build_edm(record: safe_pickle.PersistentRecord, load_weights: bool = True) -> torch.nn.Module:
    """Construct our EDM class for `record` from its recorded kwargs; load its tensors strictly (or leave it on meta).

    The net is built on the meta device first: the stored tensors replace every parameter and buffer anyway, and the
    random init of a 300M-parameter net would cost seconds.
    """
    classes = _safe_classes()
    if record.class_name not in classes:
        raise ValueError(f"'ema' holds a {record.class_name!r}; the safe loader rebuilds only {list(classes)}; "
                         f'{_TRUST_HINT}')
    cls = classes[record.class_name]
    try:
        with torch.device('meta'):
            net = cls(*_plain(record.init_args), **_plain(record.init_kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(f'the recorded constructor arguments of {record.class_name} do not fit '
                         f'{cls.__module__}.{cls.__qualname__} ({err}); {_TRUST_HINT}') from err
    check_tensors(net.state_dict(), record.state_dict, f'{cls.__module__}.{cls.__qualname__} built from its '
                   'recorded arguments', _TRUST_HINT)
    if load_weights:
        net.load_state_dict(record.state_dict, strict=True, assign=True)
    return net


def _sniff_format(f: BinaryIO, source: str) -> str:
    """'torch-checkpoint' for a torch.save zip, 'edm-pickle' for a plain pickle; ValueError for anything else."""
    head = f.read(len(_LEGACY_TORCH_MAGIC))
    f.seek(0)
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC:
        return 'torch-checkpoint'
    if head[:1] == b'\x80':  # Pickle protocol >= 2 opens with the PROTO opcode.
        return 'edm-pickle'
    raise ValueError(f'{source} is neither a pickle nor a torch.save checkpoint (starts with {head[:4]!r}); '
                     f'{_EXPECTED}')


_TRAIN_DPM_STATE_KEYS = {'net', 'ema', 'optimizer', 'cur_nimg', 'version'}  # dpm.snapshot's training state.


def _read_checkpoint(f: BinaryIO, source: str) -> tuple[str, Any]:
    """torch.load(weights_only=True) of a torch.save file -> ('adm-checkpoint', state dict) or
    ('ncsnv2-checkpoint', list); ValueError naming what the file holds otherwise."""
    obj = torch.load(f, map_location='cpu', weights_only=True)
    if isinstance(obj, dict) and _TRAIN_DPM_STATE_KEYS <= set(obj):
        raise ValueError(f'{source} is a train_dpm.py training state (training-state-*.pt: net, ema, optimizer, '
                         f'counters), not a network file; pass the network-snapshot-*.pkl of the same tick')
    if ncsnv2_checkpoint.is_ncsnv2_checkpoint(obj):
        return 'ncsnv2-checkpoint', list(obj)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if any(str(name).startswith(_ADM_PREFIXES) for name in obj):
            return 'adm-checkpoint', obj
        raise ValueError(f'{source} is a torch.save state dict of {len(obj)} tensors (e.g. {sorted(obj)[:3]}) '
                         'without the input_blocks.* / time_embed.* tensors of an ADM (guided-diffusion) checkpoint, '
                         f'nor an NCSNv2 checkpoint.pth list; {_EXPECTED}')
    raise ValueError(f'{source} holds {ncsnv2_checkpoint.describe_content(obj)}, not a state dict of tensors nor an '
                     f'NCSNv2 checkpoint list; {_EXPECTED}')


def _ncsnv2_config(entry: registry.ModelEntry | None, config: str | os.PathLike | None,
                   source: str) -> ncsnv2_checkpoint.NCSNv2Config:
    """The config of an NCSNv2 checkpoint: given, else config.yml beside a local file, else the registry's."""
    if config is not None:
        return ncsnv2_checkpoint.read_config(config)
    beside = ncsnv2_checkpoint.config_beside(source) if os.path.isfile(source) else None
    if beside is not None and os.path.isfile(beside):
        return ncsnv2_checkpoint.read_config(beside)
    if entry is not None and entry.ncsnv2_config is not None:
        return ncsnv2_checkpoint.parse_config(entry.ncsnv2_config, f'registry entry {entry.name}')
    raise FileNotFoundError(f'{source} is an NCSNv2 checkpoint, but no config.yml was found beside it '
                            f'({beside or "not a local file"}); pass ncsnv2_config (CLI: --ncsnv2-config), the '
                            'config.yml of its training run')


def _read_edm(f: BinaryIO, source: str, trusted: bool) -> tuple[Any, dict]:
    """Unpickle an EDM network pickle; return ('ema' object or record, the whole dict)."""
    data = pickle.load(f) if trusted else safe_pickle.safe_load(f)
    if not isinstance(data, dict) or 'ema' not in data:
        keys = f' with keys {sorted(map(str, data))}' if isinstance(data, dict) else ''
        raise ValueError(f"{source} holds a {type(data).__name__}{keys} and no 'ema'; expected an EDM network pickle "
                         '(a dict with ema, loss_fn, augment_pipe, dataset_kwargs)')
    return data['ema'], data


def _adm_preset_name(entry: registry.ModelEntry | None, adm_preset: str | None, source: str) -> str:
    preset = adm_preset if adm_preset is not None else (entry.adm_preset if entry is not None else None)
    if preset is None:
        raise ValueError(f'{source} is an ADM checkpoint (a plain state dict, which does not record its '
                         f'architecture): pass adm_preset (CLI: --adm-preset), one of {list(adm.ADM_PRESETS)}; or '
                         'use its registry name or keep the released file name (e.g. 64x64_diffusion.pt), from '
                         'which the preset is known')
    adm.get_adm_preset(preset)  # ValueError listing the presets.
    return preset


def _adm_unet_on_meta(state: dict, preset: str, adm_kwargs: dict, source: str) -> torch.nn.Module:
    """The preset's ADMUNet on the meta device (no memory), after checking that `state` fits it exactly."""
    with torch.device('meta'):
        unet = adm.build_adm(preset, **adm_kwargs)
    check_tensors(unet.state_dict(), state, f'ADM preset {preset!r}{f" with {adm_kwargs}" if adm_kwargs else ""}',
                   f'pass the adm_preset that {os.path.basename(source)} was trained with '
                   f'(one of {list(adm.ADM_PRESETS)})')
    return unet


def _check_adm_kwargs(adm_kwargs: dict | None) -> dict:
    allowed = ('channels_scale', 'image_size')
    if adm_kwargs is not None and (not isinstance(adm_kwargs, dict) or set(adm_kwargs) - set(allowed)):
        raise ValueError(f'adm_kwargs is {adm_kwargs!r}; expected None or a dict with some of {list(allowed)}')
    return dict(adm_kwargs or {})


def load_denoiser(name_or_path: str | os.PathLike, trusted: bool = False, adm_preset: str | None = None,
                  device: torch.device | str | None = None, adm_kwargs: dict | None = None,
                  ncsnv2_config: str | os.PathLike | None = None, ncsnv2_ema: bool | None = None) -> FrozenDenoiser:
    """Load a registry name, path or URL (EDM pickle, ADM or NCSNv2 checkpoint) as a FrozenDenoiser on `device`.

    trusted=True runs the code stored in an EDM pickle (pickle.load); the default rebuilds it from our classes.
    adm_preset overrides the registry's preset of an ADM checkpoint; adm_kwargs (channels_scale, image_size) go to
    ADMDenoiser.from_preset for shrunken test models. ncsnv2_config is the config.yml of an NCSNv2 checkpoint (None:
    the one beside it, else the registry's); ncsnv2_ema None follows its model.ema. Checkpoints never run code.
    """
    if not isinstance(trusted, bool):
        raise TypeError(f'trusted is {type(trusted).__name__} {trusted!r}; expected True or False')
    adm_kwargs = _check_adm_kwargs(adm_kwargs)
    entry, source = registry.resolve(name_or_path)
    with dnnlib.util.open_url(source) as f:
        if _sniff_format(f, source) == 'edm-pickle':
            ema, _ = _read_edm(f, source, trusted)
            if isinstance(ema, safe_pickle.PersistentRecord):
                ema = _build_edm(ema)
            elif not isinstance(ema, torch.nn.Module):
                raise ValueError(f"{source}: 'ema' is a {type(ema).__name__}; expected a network (torch.nn.Module)")
            net = ema
        else:
            fmt, content = _read_checkpoint(f, source)
            if fmt == 'ncsnv2-checkpoint':
                config = _ncsnv2_config(entry, ncsnv2_config, source)
                net = ncsnv2_checkpoint.build_denoiser(content, config, source, ema=ncsnv2_ema)
            else:
                preset = _adm_preset_name(entry, adm_preset, source)
                _adm_unet_on_meta(content, preset, adm_kwargs, source)  # A clear error before the strict load.
                net = adm.ADMDenoiser.from_preset(preset, state_dict=content, **adm_kwargs)
    finite.check_finite_modules({'denoiser': net}, f'{source} holds non-finite weights (NaN/Inf; samples would be '
                                'black); use an intact copy of the model')
    if device is not None:
        net = net.to(device)
    return FrozenDenoiser(net)


def _num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _describe_edm(ema: Any, data: dict) -> dict:
    net = _build_edm(ema, load_weights=False)  # On the meta device: only shapes and attributes are needed.
    kwargs = dict(_plain(ema.init_kwargs))
    interface = ('img_resolution', 'img_channels', 'label_dim', 'model_type')
    loss = data.get('loss_fn')
    loss_name = (loss.class_name if isinstance(loss, safe_pickle.PersistentRecord) else
                 loss.get('class_name') if isinstance(loss, dict) else None)  # train_dpm.py stores plain data.
    info = dict(format='edm-pickle', preconditioning=ema.class_name, backbone=kwargs.get('model_type',
                type(net.model).__name__), architecture={k: v for k, v in kwargs.items() if k not in interface},
                img_resolution=net.img_resolution, img_channels=net.img_channels, label_dim=net.label_dim,
                num_params=_num_params(net), sigma_min=float(net.sigma_min), sigma_max=float(net.sigma_max),
                loss=loss_name)
    if isinstance(data.get('training_sigma'), dict):  # train_dpm.py snapshots record their p(sigma).
        info['training_sigma'] = dict(data['training_sigma'])
    return info


def _describe_adm(state: dict, preset: str, adm_kwargs: dict, source: str) -> dict:
    spec = adm.get_adm_preset(preset)
    unet = _adm_unet_on_meta(state, preset, adm_kwargs, source)
    schedule = schedules.get_schedule(spec.schedule)
    architecture = {k: v for k, v in spec.unet_kwargs.items() if k not in ('image_size', 'in_channels')}
    return dict(format='adm-checkpoint', preconditioning=f'ADMDenoiser (eps, {spec.schedule})', backbone='ADMUNet',
                architecture={**architecture, **adm_kwargs}, img_resolution=unet.image_size,
                img_channels=unet.in_channels, label_dim=unet.num_classes or 0, num_params=_num_params(unet),
                sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max, adm_preset=preset, schedule=spec.schedule)


def _describe_ncsnv2(ckpt: list, config: ncsnv2_checkpoint.NCSNv2Config, ema: bool | None, source: str) -> dict:
    D = ncsnv2_checkpoint.build_denoiser(ckpt, config, source, ema=ema, load_weights=False)
    units = '[-1, 1] (rescaled)' if config.rescaled else '[0, 1]'
    return dict(format='ncsnv2-checkpoint', preconditioning=f'NCSNv2 (score = f / sigma, data in {units})',
                backbone=D.net.architecture, architecture=dict(
                    ngf=config.ngf, nonlinearity=config.nonlinearity, num_scales=config.num_classes,
                    sigma_begin=config.sigma_begin, sigma_end=config.sigma_end, dataset=config.dataset,
                    weights='ema' if (config.ema if ema is None else ema) else 'raw', step=ckpt[3]),
                img_resolution=D.img_resolution, img_channels=D.img_channels, label_dim=0,
                num_params=_num_params(D.net), sigma_min=D.sigma_min, sigma_max=D.sigma_max)


def nonfinite_tensors(state: dict[str, Any]) -> dict[str, int]:
    """{name: number of NaN/Inf elements} of the floating-point tensors of a state dict that hold any."""
    return {name: int((~torch.isfinite(value)).sum()) for name, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())}


def describe(name_or_path: str | os.PathLike, adm_preset: str | None = None, adm_kwargs: dict | None = None,
             ncsnv2_config: str | os.PathLike | None = None, ncsnv2_ema: bool | None = None) -> dict:
    """Summarise a model without running code from it: format, preconditioning, backbone, architecture kwargs,
    resolution, channels, label_dim, parameter count, sigma range, the weights holding NaN/Inf (and registry name,
    schedule, licence if known).
    Sigmas are in the denoiser's [-1, 1] units (NCSNv2's [0, 1]-data sigmas times 2)."""
    adm_kwargs = _check_adm_kwargs(adm_kwargs)
    entry, source = registry.resolve(name_or_path)
    with dnnlib.util.open_url(source) as f:
        if _sniff_format(f, source) == 'edm-pickle':
            ema, data = _read_edm(f, source, trusted=False)
            if not isinstance(ema, safe_pickle.PersistentRecord):
                raise ValueError(f"{source}: 'ema' is a {type(ema).__name__}; expected a persistent EDM network")
            info, state = _describe_edm(ema, data), ema.state_dict
        else:
            fmt, content = _read_checkpoint(f, source)
            if fmt == 'ncsnv2-checkpoint':
                config = _ncsnv2_config(entry, ncsnv2_config, source)
                info = _describe_ncsnv2(content, config, ncsnv2_ema, source)
                state = ncsnv2_checkpoint.model_state(content, config.ema if ncsnv2_ema is None else ncsnv2_ema,
                                                      source)
            else:
                info, state = _describe_adm(content, _adm_preset_name(entry, adm_preset, source), adm_kwargs,
                                            source), content
    info['nonfinite_tensors'] = nonfinite_tensors(state)  # {} for an intact model.
    info.setdefault('schedule', 'karras')  # SMaRt's t for EDM networks indexes the Karras-1000 grid.
    info.update(source=source, name=entry.name if entry else None, license=entry.license if entry else None)
    return info

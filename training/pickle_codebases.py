"""Which codebase wrote a network record of a snapshot pickle, and its constructor arguments in our classes' terms.

The safe loader (training.snapshot) rebuilds G / D from our classes (training.networks, training.discriminator) with
the recorded constructor arguments. Two codebases write StyleGAN2 networks in such pickles (docs/spec/nvidia-pickles.md
section 1.5):

- StyleGAN2-ADA (and ours): `Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
  synthesis_kwargs)`; the snapshot's arguments are used as they are.
- StyleGAN3's `training.networks_stylegan2` (`--cfg=stylegan2`): the same tensors, but the Generator takes the
  synthesis options as flat keywords (`channel_base`, `channel_max`, `fused_modconv_default`, ...), and several
  defaults differ: synthesis `num_fp16_res` 4 and `conv_clamp` 256, `fused_modconv_default` True, mapping
  `w_avg_beta` 0.998; Discriminator `num_fp16_res` 4 and `conv_clamp` 256. Its train.py does not record options left
  at these defaults, so they are filled in here, or our classes' defaults (StyleGAN2-ADA's) would change the outputs.
- StyleGAN3's alias-free generator (`training.networks_stylegan3`, `--cfg=stylegan3-t` / `stylegan3-r`) has no
  counterpart among our classes: refused with an error that says so (load such files with --trust-pickle).

The codebase is read from the records themselves, never from the stored source (which is not executed): flat
synthesis keywords mark an SG3 StyleGAN2 Generator, SG3-only keywords or tensors (`magnitude_ema_beta`,
`synthesis.input.*`, ...) the alias-free one. In StyleGAN3 snapshots D is always `networks_stylegan2.Discriminator`,
so D takes StyleGAN3's defaults whenever the snapshot's generator comes from StyleGAN3. A D pickled alone is read
with StyleGAN2-ADA's defaults.
"""

from typing import Any

from torch_utils import safe_pickle

SG2ADA = 'stylegan2-ada'
SG3_STYLEGAN2 = 'stylegan3 (networks_stylegan2)'
SG3_ALIAS_FREE = 'stylegan3 (networks_stylegan3)'
GENERATOR_KEYS = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs')  # Positional order.
DISCRIMINATOR_KEYS = ('c_dim', 'img_resolution', 'img_channels', 'architecture', 'channel_base', 'channel_max',
                      'num_fp16_res', 'conv_clamp', 'cmap_dim', 'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs')
# Keywords only StyleGAN3's alias-free synthesis network takes (train.py sets the first three for -t / -r).
ALIAS_FREE_KEYS = ('magnitude_ema_beta', 'conv_kernel', 'use_radial_filters', 'num_critical', 'first_cutoff',
                   'first_stopband', 'last_stopband_rel', 'margin_size', 'output_scale', 'filter_size',
                   'lrelu_upsampling')
SG3_SYNTHESIS_DEFAULTS = dict(num_fp16_res=4, conv_clamp=256, fused_modconv_default=True)
SG3_MAPPING_DEFAULTS = dict(w_avg_beta=0.998)
SG3_MAPPING_UNSUPPORTED = dict(freeze_layers=0, freeze_embed=False)  # SG3-only options; accepted at these values.
SG3_DISCRIMINATOR_DEFAULTS = dict(num_fp16_res=4, conv_clamp=256)
TRUST_HINT = ('load it with --trust-pickle (trusted=True), which runs the code stored in the pickle (only for files '
              'you trust)')


def _named(record: safe_pickle.PersistentRecord, names: tuple) -> dict:
    """Recorded positional and keyword arguments as one keyword dict (positional ones named in `names` order)."""
    if len(record.init_args) > len(names):
        raise ValueError(f'{record.class_name} has {len(record.init_args)} positional arguments; expected at most '
                         f'{len(names)} ({", ".join(names)})')
    kwargs = dict(zip(names, record.init_args))
    kwargs.update(record.init_kwargs)
    return kwargs


def generator_codebase(record: safe_pickle.PersistentRecord) -> str:
    """SG2ADA, SG3_STYLEGAN2 or SG3_ALIAS_FREE for a 'Generator' record (see the module docstring)."""
    kwargs = _named(record, GENERATOR_KEYS)
    if any(key in kwargs for key in ALIAS_FREE_KEYS) or any(name.startswith('synthesis.input.')
                                                            for name in record.state_dict):
        return SG3_ALIAS_FREE
    flat = set(kwargs) - set(GENERATOR_KEYS) - {'synthesis_kwargs'}
    return SG3_STYLEGAN2 if flat and 'synthesis_kwargs' not in kwargs else SG2ADA


def snapshot_codebase(records: dict[str, Any]) -> str:
    """The codebase of a snapshot, from its generator records (G_ema first); SG2ADA when it has none."""
    for key in ('G_ema', 'G'):
        record = records.get(key)
        if isinstance(record, safe_pickle.PersistentRecord) and record.class_name == 'Generator':
            return generator_codebase(record)
    return SG2ADA


def _alias_free_error(key: str, record: safe_pickle.PersistentRecord) -> ValueError:
    kwargs = _named(record, GENERATOR_KEYS)
    evidence = [k for k in ALIAS_FREE_KEYS if k in kwargs] or \
        [name for name in record.state_dict if name.startswith('synthesis.input.')][:2]
    return ValueError(f"{key}: the snapshot's Generator is StyleGAN3's alias-free generator "
                      f"(training.networks_stylegan3, --cfg=stylegan3-t or stylegan3-r; recorded {evidence}), which "
                      f"the safe loader cannot rebuild: our classes implement StyleGAN2 only; {TRUST_HINT}")


def _sg3_generator_kwargs(record: safe_pickle.PersistentRecord) -> dict:
    kwargs = _named(record, GENERATOR_KEYS)
    top = {k: kwargs.pop(k) for k in GENERATOR_KEYS if k in kwargs}
    mapping = dict(top.get('mapping_kwargs') or {})
    for name, default in SG3_MAPPING_UNSUPPORTED.items():
        if mapping.get(name, default) != default:
            raise ValueError(f"the StyleGAN3 generator's mapping_kwargs.{name} is {mapping[name]!r}; our "
                             f'MappingNetwork supports only {name}={default!r}; {TRUST_HINT}')
        mapping.pop(name, None)
    top['mapping_kwargs'] = {**SG3_MAPPING_DEFAULTS, **mapping}
    top['synthesis_kwargs'] = {**SG3_SYNTHESIS_DEFAULTS, **kwargs}  # Every other keyword is a synthesis option.
    return top


def our_arguments(key: str, record: safe_pickle.PersistentRecord, codebase: str) -> tuple[tuple, dict]:
    """(args, kwargs) for our class of `record` (class_name Generator / Discriminator / AugmentPipe), written by
    `codebase` (snapshot_codebase); ValueError naming the codebase when our classes cannot rebuild it."""
    if record.class_name == 'Generator':
        own = generator_codebase(record)
        if own == SG3_ALIAS_FREE:
            raise _alias_free_error(key, record)
        if own == SG3_STYLEGAN2:
            return (), _sg3_generator_kwargs(record)
    if record.class_name == 'Discriminator' and codebase in (SG3_STYLEGAN2, SG3_ALIAS_FREE):
        return (), {**SG3_DISCRIMINATOR_DEFAULTS, **_named(record, DISCRIMINATOR_KEYS)}
    return tuple(record.init_args), dict(record.init_kwargs)

"""SMaRt's start-up line before anything runs: what `train.py --dry-run` prints for the SMaRt plugin.

A run prints its SMaRt line in SMaRt.setup(), after building the score source. A dry run must not download a model or
fit the Gaussian source, so here the band is resolved from what set-up validation already has: the registry entry
of a named model, the loaded local model, or nothing (the Gaussian source, whose own schedule is Karras-1000).
"""

from typing import Any

import torch

from edm_bridge import registry
from smart_plugin.band import resolve_band
from smart_plugin.options import OptionError, SMaRtOptions
from smart_plugin.regularizer import SMaRt, band_warning


def startup_lines(options: SMaRtOptions | None, source: Any = None, num_images: int = 0) -> list[str]:
    """SMaRt's start-up line and, for a band below one grey level, its warning, as a run with these options prints
    them ([] when SMaRt is off). `source`: the score source's registry.ModelEntry, a loaded denoiser module, or None;
    `num_images`: the dataset size (named for the Gaussian source). Raises OptionError for a t beyond the schedule."""
    if options is None or not options.enabled:
        return []
    entry = source if isinstance(source, registry.ModelEntry) else None
    denoiser = source if isinstance(source, torch.nn.Module) else None
    band = resolve_band(options.t_lo, options.t_hi, options.schedule, denoiser, entry)
    if band.t_hi >= band.schedule.num_steps:
        raise OptionError('t_hi', band.t_hi, f'SMaRtOptions.t_hi is {band.t_hi}; expected an integer < '
                          f'{band.schedule.num_steps}, the number of steps of schedule {band.schedule.name}')
    plugin = SMaRt(options)
    plugin.band = band
    sigma_lo, sigma_hi = (float(band.schedule.sigma_hat(t)) for t in (band.t_lo, band.t_hi))
    name = f'gaussian (per-pixel fit to {num_images} images)' if options.dpm == 'gaussian' else options.dpm
    warning = band_warning(sigma_hi, band.schedule.name)
    return [plugin.describe(sigma_lo, sigma_hi, name, [])] + ([warning] if warning is not None else [])


def plugin_startup_lines(plugins: list, num_images: int) -> list[str]:
    """startup_lines of the SMaRt plugin among `plugins` after its preflight(): the local model that preflight
    loaded, else the registry entry of its --smart-dpm (named models are not downloaded), else none (Gaussian)."""
    smart = next((plugin for plugin in plugins if isinstance(plugin, SMaRt)), None)
    if smart is None:
        return []
    loaded = smart._source  # edm_bridge.factory.ScoreSource of a local file, or None.
    if loaded is not None:
        source = loaded.entry or loaded.denoiser
    else:
        source = None if smart.options.dpm == 'gaussian' else registry.resolve(smart.options.dpm)[0]
    return startup_lines(smart.options, source, num_images)

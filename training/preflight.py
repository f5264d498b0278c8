"""train.py's pre-flight: every check that can be made before the run dir exists, each input file read once.

`read_inputs` opens the dataset (one header scan) and reads the resume snapshot (one read) and returns them with
the facts the pure builder (training/config.py) needs; `validate` builds CPU copies of the networks and checks the
resume weights, the plugins (e.g. SMaRt's score source, which it keeps) and the metrics' detectors against them.
The loaded objects (`Inputs.training_set`, `Inputs.resume_data`) go on to set-up. Errors are `ConfigError`s naming
the flag.
"""

import dataclasses
import io
import os
import pickle
from typing import Any

import torch

import dnnlib
from dataset_io.reader import ImageFolderDataset
from metrics import detectors, metric_main
from metrics.detectors import DetectorUnavailableError
from torch_utils import safe_pickle
from training import train_state
from training.config import DataFacts, ResumeFacts, RESUME_SPECS, RunPlan, resume_pkl
from training.option_fields import ConfigError
from training.resume import ResumeCoverageError, ResumeDataError, coverage_message, load_resume, read_resume
from training.train_options import RESUME_HINT_FLAGS


@dataclasses.dataclass
class Inputs:
    """What pre-flight read, handed on to set-up."""
    dataset: ImageFolderDataset                 # --data, opened once (labels not loaded).
    data: DataFacts
    resume: ResumeFacts | None = None
    resume_raw: bytes | None = None             # The snapshot's bytes, read once.
    resume_entries: dict | None = None          # Its top-level dict, safely unpickled (plugins, training_state).
    resume_data: dict | None = None             # Networks rebuilt (resume.read_resume), after validate().
    training_set: Any = None                    # The dataset as training_set_kwargs asks (after validate()).
    metrics: list[str] = dataclasses.field(default_factory=list)
    detector_kinds: set[str] = dataclasses.field(default_factory=set)


def open_dataset(data: str, cond: bool) -> ImageFolderDataset:
    """The dataset at --data (labels not loaded); errors name --data, or --cond when labels are asked for but
    missing. A dataset.json that does not parse is an error with --cond and a warning without."""
    try:
        dataset = ImageFolderDataset(path=data, use_labels=False, xflip=False)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError('--data', str(err)) from None
    try:
        has_labels = dataset.has_stored_labels
    except OSError as err:  # A dataset.json that does not parse: an error with --cond, a warning without.
        if cond:
            raise ConfigError('--data', f'{err} (--cond needs valid labels)') from None
        print(f'Warning: --data: {err}; ignored, since labels are used only with --cond')
        has_labels = False
    if cond and not has_labels:
        raise ConfigError('--cond', f'{data} has no labels (no dataset.json with "labels"); train unconditionally '
                                    'or add labels with dataset_tool.py')
    if cond:
        try:
            dataset.check_labels()
        except OSError as err:
            raise ConfigError('--data', f'{err} (--cond needs valid labels)') from None
    return dataset


def _read_resume(opts, inputs: Inputs) -> None:
    pkl = resume_pkl(opts.resume)
    if pkl is None:
        return
    if not dnnlib.util.is_url(pkl, allow_file_urls=True) and not os.path.isfile(pkl):
        raise ConfigError('--resume', f'{pkl!r} is neither an existing file, a URL nor one of {list(RESUME_SPECS)}')
    try:
        with dnnlib.util.open_url(pkl) as f:
            raw = f.read()
        entries = safe_pickle.safe_load(io.BytesIO(raw))
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ConfigError('--resume', f'cannot read {pkl}: {err}') from None
    entries = entries if isinstance(entries, dict) else {}
    if all(entries.get(name) is None for name in ('G', 'D', 'G_ema')):
        raise ConfigError('--resume', f'{pkl} holds no networks (keys {sorted(map(str, entries))}); expected a '
                                      f'network snapshot with G, D and G_ema')
    state = entries.get('training_state')
    cur_nimg = state.get('cur_nimg') if isinstance(state, dict) else None
    inputs.resume = ResumeFacts(pkl=pkl, exact=state is not None, cur_nimg=cur_nimg)
    inputs.resume_raw, inputs.resume_entries = raw, entries


def read_inputs(opts) -> Inputs:
    """Open --data, parse --metrics (and check the detector paths), read --resume; errors name the flag."""
    dataset = open_dataset(opts.data, opts.cond)
    inputs = Inputs(dataset=dataset, data=DataFacts(name=dataset.name, resolution=dataset.resolution,
                                                    num_images=dataset.num_raw_images))
    try:
        inputs.metrics = metric_main.parse_metric_list(opts.metrics)
    except ValueError as err:
        raise ConfigError('--metrics', str(err)) from None
    inputs.detector_kinds = metric_main.detectors_for(inputs.metrics)
    for flag, source in (('--detector', opts.detector), ('--detector-vgg16', opts.detector_vgg16)):
        if source is not None and not dnnlib.util.is_url(source, allow_file_urls=True) and not os.path.isfile(source):
            raise ConfigError(flag, f'{source!r} is neither an existing file nor a URL')
    _read_resume(opts, inputs)
    return inputs


def _check_plugin_states(inputs: Inputs, plugins: list, flags: dict[str, str]) -> None:
    """Refuse a snapshot whose plugin states do not fit these plugins' options (e.g. a Diffusion-GAN D trained on
    t / t_max resumed with raw t); fresh copies load them, the run's plugins stay untouched."""
    saved = inputs.resume_entries.get('plugins') or {}
    for plugin in plugins:
        if plugin.name not in saved:
            continue
        try:
            type(plugin)(plugin.options).load_state_dict(saved[plugin.name])
        except ValueError as err:
            if hasattr(err, 'field'):  # smart_plugin.OptionError: a plugin option that does not fit.
                raise ConfigError(flags.get(err.field, '--resume'), f'--resume={inputs.resume.pkl}: {err}') from None
            raise ConfigError('--resume', f'{inputs.resume.pkl}: {err}') from None
        except TypeError as err:
            raise ConfigError('--resume', f'{inputs.resume.pkl}: {err}') from None


def _check_detectors(plan: RunPlan, kinds: set[str]) -> None:
    """Each detector the metrics need loads (TorchScript unless --trust-detector), fetched now if it must be
    downloaded: a run never writes its first snapshot only to fail at the first evaluation."""
    kwargs = plan.loop_kwargs['metric_kwargs']
    for kind in sorted(kinds):
        try:
            detectors.get_detector(kind, kwargs['detector_vgg16' if kind == 'vgg16' else 'detector'], 'cpu',
                                   trust=kwargs['trust_detector'])
        except DetectorUnavailableError as err:
            raise ConfigError(err.flag, str(err)) from None


def check_resume_fit(inputs: Inputs, G, D, G_ema, partial: bool) -> None:
    """The resume weights fill the configured networks one to one (or --resume-partial), with matching shapes."""
    try:
        load_resume(inputs.resume.pkl, G, D, G_ema, partial=partial, log=lambda *args: None,
                    data=inputs.resume_data)  # With --resume-partial, set-up prints the lists.
    except ResumeCoverageError as err:  # Its hints come back as data; here they are worded with train.py's flags.
        raise ConfigError('--resume', coverage_message(err.resume_pkl, err.lines,
                                                       [RESUME_HINT_FLAGS[hint] for hint in err.hints],
                                                       'flags that probably differ', '--resume-partial')) from None
    except ResumeDataError as err:  # The same: its hint comes back as data.
        raise ConfigError('--resume', err.message(RESUME_HINT_FLAGS['data'])) from None
    except (OSError, ValueError) as err:
        raise ConfigError('--resume', str(err)) from None


def validate(plan: RunPlan, inputs: Inputs, plugins: list, flags: dict[str, str]) -> None:
    """Check the data view, networks, resume weights, plugins and detectors on CPU copies of the networks; fills
    inputs.training_set and inputs.resume_data for set-up. `flags`: plugin option field -> flag, for errors."""
    kwargs = plan.loop_kwargs
    dataset_kwargs = kwargs['training_set_kwargs']
    inputs.training_set = inputs.dataset.view(max_size=dataset_kwargs['max_size'],
                                              use_labels=dataset_kwargs['use_labels'], xflip=dataset_kwargs['xflip'],
                                              random_seed=dataset_kwargs.get('random_seed', 0))
    extra_c_dim = sum(plugin.extra_c_dim for plugin in plugins)
    with torch.random.fork_rng():  # Building networks draws initial weights; leave the global RNG as it was.
        G, D, G_ema = train_state.build_networks(inputs.training_set, kwargs['G_kwargs'], kwargs['D_kwargs'],
                                                 extra_c_dim, torch.device('cpu'))
    if inputs.resume is not None:
        try:
            inputs.resume_data = read_resume(inputs.resume.pkl, inputs.resume_raw)
        except (OSError, ValueError) as err:
            raise ConfigError('--resume', str(err)) from None
        inputs.resume_raw = None  # Read once; set-up uses resume_data.
        check_resume_fit(inputs, G, D, G_ema, partial=kwargs.get('resume_partial', False))
        if inputs.resume.exact:
            _check_plugin_states(inputs, plugins, flags)
    for plugin in plugins:
        try:
            plugin.preflight(G=G, training_set=inputs.training_set)
        except ValueError as err:
            raise ConfigError(flags.get(getattr(err, 'field', None), '--smart-*/--diffgan-*'), str(err)) from None
    _check_detectors(plan, inputs.detector_kinds)

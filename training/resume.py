"""Resume of a StyleGAN2-ADA training run from a network snapshot (docs/spec/stylegan2-ada.md section 5): the weights of
G, D and G_ema are copied by name, like the official code, after checking that the snapshot fills the configured
networks one to one (or the caller allows a partial resume)."""

import io
import pickle
import re
from typing import Any

import dnnlib
from torch_utils import finite, misc, safe_pickle
from training import snapshot


class ResumeError(ValueError):
    """The resume snapshot cannot continue this run (unreadable, no networks, another resolution or label set)."""


_RESUME_ATTRS = ('img_resolution', 'img_channels', 'c_dim')  # Set by the data: a mismatch is no architecture flag.


# Settings that probably differ when a resume leaves tensors unused or unfilled: hint key -> words. The hints come
# back as data (ResumeCoverageError.hints); a CLI words them with its own flags (training/train_options.py).
HINTS = {
    'labels': "the label input (G_kwargs / D labels; D's mapping exists only with labels)",
    'map_depth': 'the mapping depth (mapping_kwargs.num_layers)',
    'd_architecture': "D's architecture (D_kwargs.architecture: orig or resnet)",
    'layers': 'the resolution or the channels per resolution (channel_base, channel_max)',
    'data': 'the data (training_set_kwargs: path, use_labels)',  # Sets img_resolution, img_channels and c_dim.
}


class ResumeCoverageError(ResumeError):
    """The resume snapshot's tensors and the configured networks' tensors do not match one to one; `lines` describe
    each network's unused and unfilled tensors, `hints` are HINTS keys of the settings that probably differ."""

    def __init__(self, resume_pkl: str, lines: list[str], hints: list[str]) -> None:
        self.resume_pkl, self.lines, self.hints = resume_pkl, lines, hints
        super().__init__(coverage_message(resume_pkl, lines, [HINTS[hint] for hint in hints],
                                          'settings that probably differ', 'resume_partial=True'))


class ResumeDataError(ResumeError):
    """The snapshot's `network` has another `attr` (img_resolution, img_channels or c_dim: set by the data, not by
    an architecture setting) than this run needs; `hints` is ['data'], which a CLI words with its own flags."""

    def __init__(self, resume_pkl: str, network: str, attr: str, stored: Any, wanted: Any) -> None:
        self.resume_pkl, self.network, self.attr, self.stored, self.wanted = resume_pkl, network, attr, stored, wanted
        self.hints = ['data']
        super().__init__(self.message(HINTS['data']))

    def message(self, set_by: str) -> str:
        """The refusal, with the settings that set the attribute worded by the caller."""
        return (f'{self.resume_pkl}: {self.network} has {self.attr} {self.stored} but this run needs {self.wanted} '
                f'(set by {set_by}); resume with a snapshot trained on data like this')


def coverage_message(resume_pkl: str, lines: list[str], hints: list[str], hints_are: str, partial: str) -> str:
    """The refusal of a resume that does not fill the networks one to one, with `hints` worded by the caller."""
    hint = f'{hints_are} from the run that wrote it: {", ".join(hints)}; ' if hints else ''
    return (f'resume_pkl {resume_pkl!r} does not match the configured networks one to one:\n' + '\n'.join(lines)
            + f'\n{hint}or pass {partial} if only part of the weights is meant to be resumed')


def _coverage_hint(network: str, tensor_name: str) -> str:
    """The HINTS key of the setting that probably differs when `tensor_name` of `network` is unused or unfilled."""
    if 'embed.' in tensor_name or (network == 'D' and tensor_name.startswith('mapping.')):
        return 'labels'
    if re.match(r'mapping\.fc\d+\.', tensor_name):
        return 'map_depth'
    if re.search(r'(^|\.)b\d+\.skip\.', tensor_name):
        return 'd_architecture'
    return 'layers'


def coverage_report(data: dict, networks: dict) -> tuple[list[str], list[str]]:
    """(lines describing each network's unused snapshot tensors and unfilled network tensors, HINTS keys of the
    settings that probably differ); both empty when the snapshot `data` fills `networks` ({name: module}) exactly.
    A network missing from the snapshot counts as wholly unfilled."""
    lines, hints = [], []
    for name, module in networks.items():
        if data.get(name) is None:
            unused, unfilled = [], [tensor_name for tensor_name, _ in misc.named_params_and_buffers(module)]
        else:
            unused, unfilled = misc.param_coverage(data[name], module)
        if unused or unfilled:
            lines.append(f'  {name}: {len(unused)} tensor(s) of the snapshot not used: {", ".join(unused) or "-"}; '
                         f'{len(unfilled)} of the network not filled: {", ".join(unfilled) or "-"}')
            hints += [_coverage_hint(name, tensor_name) for tensor_name in unused + unfilled]
    return lines, list(dict.fromkeys(hints))


def read_resume(resume_pkl: str, raw: bytes | None = None) -> dict:
    """The snapshot at resume_pkl (or its bytes `raw`, already read) loaded safely, networks rebuilt."""
    try:
        source = resume_pkl if raw is None else io.BytesIO(raw)
        return snapshot.load_network_pkl(source, trust_flag=None)  # A resume never runs code from a file.
    except FileNotFoundError as err:
        raise FileNotFoundError(f'resume_pkl {resume_pkl!r}: {err}') from err
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ResumeError(f'resume_pkl {resume_pkl!r}: cannot load it as a network snapshot ({err})') from err


def resume_summary(pkl: str) -> dnnlib.EasyDict:
    """What a snapshot (path or URL) holds, without rebuilding networks: exact (ours, with a training_state),
    cur_nimg (exact only, else None), networks (which of G, D, G_ema) and entries (all keys). Read with the safe
    loader (nothing in it runs); metrics/compare.py reads a snapshot's exact kimg through it."""
    with dnnlib.util.open_url(pkl) as f:
        data = safe_pickle.safe_load(f)
    data = data if isinstance(data, dict) else {}
    state = data.get('training_state')
    exact = state is not None
    cur_nimg = state.get('cur_nimg') if exact and isinstance(state, dict) else None
    return dnnlib.EasyDict(exact=exact, cur_nimg=cur_nimg, entries=sorted(map(str, data)),
                           networks=[name for name in ('G', 'D', 'G_ema') if data.get(name) is not None])


def load_resume(resume_pkl: str, G, D, G_ema, partial: bool = False, log=print, data: dict | None = None) -> dict:
    """Load a snapshot (safely; `data`: read_resume's result, already loaded) and copy the weights of G, D and
    G_ema by name; return the loaded dict.

    Unless `partial`, raises ResumeCoverageError (listing both sides and the settings that probably differ) when any
    snapshot tensor would be left unused or any network tensor unfilled; with `partial` the lists are logged and
    the training state is dropped (it belongs to other networks), so the resume is weights-only.
    """
    if data is None:
        data = read_resume(resume_pkl)
    if all(data.get(name) is None for name in ('G', 'D', 'G_ema')):
        raise ResumeError(f'{resume_pkl} holds no networks (keys {sorted(map(str, data))}); expected a snapshot with '
                          f'G, D and G_ema')
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        for attr in _RESUME_ATTRS if data.get(name) is not None else ():
            # Set by the data, not by an architecture flag: say so before the coverage lists would.
            stored, wanted = getattr(data[name], attr, None), getattr(module, attr)
            if stored is not None and stored != wanted:
                raise ResumeDataError(resume_pkl, name, attr, stored, wanted)
    lines, hints = coverage_report(data, dict(G=G, D=D, G_ema=G_ema))
    if lines and not partial:
        raise ResumeCoverageError(resume_pkl, lines, hints)
    if lines:  # Optimizer and plugin states belong to the other networks: weights only.
        log(f'Partial resume from "{resume_pkl}" (partial; weights only):\n' + '\n'.join(lines))
        data = dict(data, training_state=None)
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        if data.get(name) is None:
            continue
        try:
            misc.copy_params_and_buffers(data[name], module, require_all=False)
        except ValueError as err:
            raise ResumeError(f'resume_pkl {resume_pkl!r}: {name} does not fit the configured network ({err}); '
                              'resume needs the same architecture, resolution and label dimension') from err
    finite.check_finite_modules({name: data.get(name) for name in ('G', 'D', 'G_ema')},
                                f'{resume_pkl}: refusing to resume from non-finite weights', flag='resume_pkl')
    return data

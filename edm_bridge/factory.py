"""One factory from a score-source spec (a registry name, a path or URL, or 'gaussian') to a frozen Denoiser.

SMaRt's pre-flight check and its set-up both come here, so the spec is resolved by one rule: a registry entry is
checked against the generator before anything is downloaded or loaded, a file is loaded by edm_bridge.loading,
'gaussian' is fitted to the training set (edm_bridge.gaussian).
"""

import dataclasses
from typing import Any

import dnnlib
from edm_bridge import checks, loading, registry
from edm_bridge.denoiser import FrozenDenoiser
from edm_bridge.gaussian import fit_gaussian_denoiser


@dataclasses.dataclass(frozen=True)
class ScoreSource:
    """A resolved score source."""
    denoiser: FrozenDenoiser                # Frozen: eval mode, no parameter gradients.
    label: str                              # How the start-up line names it.
    entry: registry.ModelEntry | None       # Its registry entry (band and schedule defaults), None if not listed.


def load_score_source(spec: str, img_resolution: int, img_channels: int, label_dim: int, training_set: Any = None,
                      device='cpu', local_only: bool = False) -> ScoreSource | None:
    """The frozen denoiser of `spec` on `device`, for a generator of that resolution, channels and label dim.

    local_only=True (pre-flight): check a registry entry by its description and load only a local file that no
    entry describes; returns None for 'gaussian', entries and URLs (set-up loads them). Raises ValueError /
    OSError / TypeError naming the misfit or the unreadable file.
    """
    if spec == 'gaussian':
        if local_only:
            return None
        if training_set is None:
            raise ValueError("score source 'gaussian' is fitted to the training set; pass training_set")
        return ScoreSource(FrozenDenoiser(fit_gaussian_denoiser(training_set)).to(device),
                           f'gaussian (per-pixel fit to {len(training_set)} images)', None)
    entry, source = registry.resolve(spec)
    if entry is not None:  # Refuse a known misfit before downloading or loading it.
        checks.check_compatible(entry, img_resolution, img_channels, label_dim)
    if local_only and (entry is not None or dnnlib.util.is_url(source, allow_file_urls=True)):
        return None
    denoiser = loading.load_denoiser(spec, device=device)
    denoiser = denoiser if isinstance(denoiser, FrozenDenoiser) else FrozenDenoiser(denoiser)
    return ScoreSource(denoiser.to(device), str(spec), entry)

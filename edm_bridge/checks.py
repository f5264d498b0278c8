"""Start-up checks that a pretrained denoiser fits the GAN it regularises (SMaRt, Xia et al., ICML 2024).

`check_compatible` compares image size, channels and labels and raises with a hint when they cannot work together.
`check_tensors` names the tensors of a strict load that do not match. `check_sigma_band` warns when the noise levels
SMaRt will query lie where the denoiser was not (or hardly) trained: outside its [sigma_min, sigma_max], or, for
networks trained with EDM's losses, below sigma = 0.01, which EDM's default log-normal sigma distribution almost
never draws (docs/spec/diffusion.md section 3).

Label policy (decided here, used by FrozenDenoiser):
  - conditional denoiser, unconditional GAN: refused. The denoiser would get all-zero labels, which it never saw
    in training, so its score is out of distribution.
  - unconditional denoiser, conditional GAN: allowed with a note. The labels are dropped; the score then describes
    the class-marginal data distribution, a valid (weaker) target for every class at once.
  - both conditional: the class counts must match (the labels must index the same classes).
"""

import math
import warnings
from typing import Any, Sequence

import torch

# EDM's default training distribution of noise levels: ln(sigma) ~ N(P_mean, P_std^2) (EDM paper, Table 1).
EDM_P_MEAN = -1.2
EDM_P_STD = 1.2
EDM_RARE_SIGMA = 0.01  # Below this, 0.23% of EDM training samples: the score there is poorly trained.
EDM_TRAINED_CLASSES = ('EDMPrecond', 'VPPrecond', 'VEPrecond')  # Trained with EDM's losses (not ADM's iDDPM).


def _attr(obj: Any, name: str, arg: str, expected: str) -> Any:
    if not hasattr(obj, name):
        raise TypeError(f'{arg} ({type(obj).__name__}) has no attribute {name!r}; expected {expected}')
    return getattr(obj, name)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} is {type(value).__name__} {value!r}; expected an int')
    if value < minimum:
        raise ValueError(f'{name} is {value}; expected an int >= {minimum}')
    return value


def check_compatible(denoiser: Any, img_resolution: int, img_channels: int, label_dim: int,
                     what: str = 'generator') -> list[str]:
    """Raise ValueError if `denoiser` (a Denoiser or registry entry) cannot score images of the `what`'s shape and
    labels; return notes (strings) on allowed-but-noteworthy combinations, empty when everything matches."""
    R = _check_count('img_resolution', img_resolution, 1)
    C = _check_count('img_channels', img_channels, 1)
    L = _check_count('label_dim', label_dim, 0)
    r, c, l = (int(_attr(denoiser, name, 'denoiser', 'a Denoiser or registry.ModelEntry'))
               for name in ('img_resolution', 'img_channels', 'label_dim'))
    if r != R:
        raise ValueError(f'denoiser is {r}x{r} but the {what} outputs {R}x{R}; use a {R}x{R} model')
    if c != C:
        raise ValueError(f'denoiser takes {c}-channel images but the {what} outputs {C}-channel images; use a model '
                         f'trained on {C}-channel data')
    if l > 0 and L == 0:
        raise ValueError(f'denoiser is class-conditional ({l} classes) but the {what} is unconditional '
                         '(label_dim 0): the denoiser would get all-zero labels, which it never saw in training '
                         '(out of distribution); use an unconditional denoiser')
    if l > 0 and l != L:
        raise ValueError(f'denoiser is conditional on {l} classes but the {what} on {L}: the labels must index the '
                         f'same classes; use a denoiser trained on the {what}\'s {L} classes')
    if l == 0 and L > 0:
        return [f'the denoiser is unconditional and the {what} conditional on {L} classes: labels are not passed to '
                'the denoiser, so the score regularises the class-marginal distribution']
    return []


def _sigma_range(denoiser_or_range: Any) -> tuple[float, float]:
    if isinstance(denoiser_or_range, (tuple, list)):
        if len(denoiser_or_range) != 2:
            raise ValueError(f'denoiser_or_range is {denoiser_or_range!r}; expected (sigma_min, sigma_max)')
        lo, hi = (float(v) for v in denoiser_or_range)
    else:
        lo, hi = (float(_attr(denoiser_or_range, name, 'denoiser_or_range', 'a Denoiser or (sigma_min, sigma_max)'))
                  for name in ('sigma_min', 'sigma_max'))
    if not 0 <= lo <= hi:
        raise ValueError(f'sigma range ({lo:g}, {hi:g}) is not ordered; expected 0 <= sigma_min <= sigma_max')
    return lo, hi


def is_edm_trained(denoiser: Any) -> bool:
    """True if `denoiser` (or the net a FrozenDenoiser wraps) is an EDM, VP or VE preconditioner."""
    net = getattr(denoiser, 'net', denoiser)
    return type(net).__name__ in EDM_TRAINED_CLASSES or type(denoiser).__name__ in EDM_TRAINED_CLASSES


def edm_training_share(sigma_lo: float, sigma_hi: float) -> float:
    """Probability that EDM's default training draws sigma in [sigma_lo, sigma_hi] (log-normal, EDM Table 1)."""
    def cdf(sigma: float) -> float:
        return 0.5 * (1 + math.erf((math.log(sigma) - EDM_P_MEAN) / (EDM_P_STD * math.sqrt(2))))
    return cdf(sigma_hi) - cdf(sigma_lo)


def check_sigma_band(denoiser_or_range: Any, sigmas: Sequence[float] | torch.Tensor,
                     edm_trained: bool | None = None) -> str | None:
    """Warn (warnings.warn) and return the text when the noise levels `sigmas` leave what the denoiser was trained
    on; return None when they are fine. `denoiser_or_range` is a Denoiser or (sigma_min, sigma_max);
    `edm_trained=None` infers it from the denoiser's class (False for a bare range)."""
    values = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if values.numel() == 0 or not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise ValueError(f'sigmas are {values.tolist()}; expected a non-empty list of positive finite noise levels')
    band_lo, band_hi = float(values.min()), float(values.max())
    sigma_min, sigma_max = _sigma_range(denoiser_or_range)
    if edm_trained is None:
        edm_trained = not isinstance(denoiser_or_range, (tuple, list)) and is_edm_trained(denoiser_or_range)
    band = f'sigma band [{band_lo:.4g}, {band_hi:.4g}]'
    problems = []
    if band_lo < sigma_min:
        problems.append(f"{band} goes below the denoiser's sigma_min {sigma_min:.4g}")
    if band_hi > sigma_max:
        problems.append(f"{band} goes above the denoiser's sigma_max {sigma_max:.4g}")
    if edm_trained and band_lo < EDM_RARE_SIGMA:
        share = edm_training_share(band_lo, band_hi)
        problems.append(f'{band} reaches below {EDM_RARE_SIGMA:g}, which an EDM-trained network rarely sees: '
                        f'EDM\'s default training (ln sigma ~ N({EDM_P_MEAN:g}, {EDM_P_STD:g}^2)) puts {share:.3%} of '
                        'its samples in this band, so the score there is poorly trained; query larger sigmas or use a '
                        'model trained with extra weight on this band')
    if not problems:
        return None
    text = '; '.join(problems)
    warnings.warn(text, stacklevel=2)
    return text


def check_tensors(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], what: str, hint: str) -> None:
    """Raise ValueError naming the missing, unexpected and wrongly shaped tensors (up to 4 each) of a strict load."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong_shape = sorted(f'{name} {list(stored[name].shape)} != {list(expected[name].shape)}'
                         for name in set(expected) & set(stored) if stored[name].shape != expected[name].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(f'the stored tensors do not match {what} (missing {missing[:4]}, unexpected '
                         f'{unexpected[:4]}, wrong shape {wrong_shape[:4]}); {hint}')

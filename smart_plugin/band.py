"""SMaRt's t band and t -> sigma schedule, with a default per score source (docs/smart-settings.md).

The same integer t is a very different noise level on different schedules (docs/spec/diffusion.md §1): the paper's
t 25..35 is sigma 0.0955..0.128 on ADM's native DDPM-linear steps but 0.0036..0.0045 on Karras-1000, below one grey
level of 8-bit data, where the eps-form loss is huge and meaningless. So the band the user does not give is chosen
for the score source (SMaRtOptions.t_lo / t_hi / schedule None):

  neither given       a source whose own schedule is a DDPM one (ADM checkpoints) keeps the paper's t 25..35 on it;
                      every other source (EDM pickles, train_dpm.py snapshots, NCSNv2, the Gaussian) gets t 40..60 on
                      DDPM-linear-1000, sigma 0.1437..0.2085 (what the README's examples and the digits study use).
  only t given        the source's own schedule (resolve_schedule).
  only schedule given the steps of that schedule nearest (in log sigma) to the source's default sigma band.

Every default band lies above one grey level (QUANTISATION_SIGMA), so band_warning never fires for one.
"""

import dataclasses

import torch

from edm_bridge import registry, schedules

# One grey level of 8-bit images in the library's [-1, 1] units: below it the added noise changes no pixel of the
# data the score source learned from.
QUANTISATION_SIGMA = 2 / 255
PAPER_T = (25, 35)              # The paper's ImageNet / LSUN band, on ADM's native DDPM steps.
DEFAULT_SCHEDULE = 'ddpm-linear'
DEFAULT_T = (40, 60)            # On DDPM-linear-1000: sigma 0.1437..0.2085.


@dataclasses.dataclass(frozen=True)
class Band:
    """A resolved band: integer steps t_lo..t_hi of `schedule`, and how they were chosen ('' = both given)."""

    schedule: schedules.NoiseSchedule
    t_lo: int
    t_hi: int
    origin: str = ''


def resolve_schedule(schedule: str | None, denoiser: torch.nn.Module,
                     entry: registry.ModelEntry | None) -> schedules.NoiseSchedule:
    """The t -> sigma map named by the option `schedule`; for None the score source's own: ADM's native DDPM
    schedule, else the registry entry's, else Karras-1000 (EDM networks, the Gaussian source)."""
    if schedule is not None:
        return schedules.parse_schedule(schedule)
    net = getattr(denoiser, 'net', denoiser)
    if isinstance(getattr(net, 'schedule', None), schedules.NoiseSchedule):
        return net.schedule
    if entry is not None:
        return schedules.get_schedule(entry.schedule)
    return schedules.get_schedule('karras')


def default_band(own: schedules.NoiseSchedule) -> Band:
    """The band for a source whose own schedule is `own` when the user gives neither t nor the schedule."""
    if (isinstance(own, schedules.DDPMSchedule) and PAPER_T[1] < own.num_steps
            and own.sigma_hat(PAPER_T[0]) >= QUANTISATION_SIGMA):
        return Band(own, *PAPER_T, "default for this score source: the paper's band on its own DDPM steps")
    return Band(schedules.get_schedule(DEFAULT_SCHEDULE), *DEFAULT_T,
                f'default for this score source: its own schedule, {own.name}-{own.num_steps}, is not a DDPM one')


def resolve_band(t_lo: int | None, t_hi: int | None, schedule: str | None, denoiser: torch.nn.Module,
                 entry: registry.ModelEntry | None) -> Band:
    """The band of the options t_lo, t_hi (both None = not given) and schedule (None = not given) for this source."""
    if t_lo is not None:
        origin = '' if schedule is not None else "schedule not given: the score source's own"
        return Band(resolve_schedule(schedule, denoiser, entry), t_lo, t_hi, origin)
    default = default_band(resolve_schedule(None, denoiser, entry))
    if schedule is None:
        return default
    chosen = schedules.parse_schedule(schedule)
    lo, hi = (float(default.schedule.sigma_hat(t)) for t in (default.t_lo, default.t_hi))
    return Band(chosen, int(chosen.t_for_sigma(lo)), int(chosen.t_for_sigma(hi)),
                f't not given: the steps nearest to sigma {lo:.4g}..{hi:.4g}, the default band for this score source')

"""Released ADM checkpoints (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") as EDM-style
denoisers D(x; sigma) for SMaRt (Xia et al. 2024, "SMaRt: Improving GANs with Score Matching Regularity").

ADM predicts eps from x_t = alpha_t x0 + sigma_t eps at its integer DDPM step t. In EDM form x = x0 + sigma_hat eps
with sigma_hat = sigma_t / alpha_t, so x_t = alpha_t x, alpha_t = 1 / sqrt(1 + sigma_hat^2), and
D(x; sigma_hat) = x - sigma_hat eps_theta(alpha_t x, t) (k-diffusion's eps wrapper, Karras et al. 2022 eq. 12).

ADM was trained only on its 1000 integer steps: ADMDenoiser snaps every sigma to the nearest grid value
(`sigma_grid`, nearest in log sigma) and uses that value throughout. Callers should query grid values.
"""

import dataclasses

import torch

from edm_bridge.adm_unet import GROUPS, ADMUNet
from edm_bridge.schedules import NoiseSchedule, get_schedule


@dataclasses.dataclass(frozen=True)
class ADMPreset:
    """One released guided-diffusion checkpoint: its UNet kwargs (README flags) and its noise schedule."""

    unet_kwargs: dict                       # ADMUNet constructor keywords.
    schedule: str                           # Registry name of the 1000-step training schedule.
    learn_sigma: bool                       # Output has 2 * img_channels channels; the first half is eps.
    class_cond: bool                        # Needs ImageNet class labels.
    checkpoint: str                         # File name of the released state dict.


def _unet_kwargs(image_size: int, model_channels: int, num_res_blocks: int, channel_mult: tuple, attention_px: tuple,
                 class_cond: bool, learn_sigma: bool = True, **kwargs) -> dict:
    """Keywords as guided-diffusion's create_model builds them: attention given in pixels becomes ds = size // px."""
    return dict(image_size=image_size, in_channels=3, model_channels=model_channels,
                out_channels=6 if learn_sigma else 3, num_res_blocks=num_res_blocks,
                attention_resolutions=tuple(image_size // px for px in attention_px), channel_mult=channel_mult,
                num_classes=1000 if class_cond else None, use_fp16=True, use_scale_shift_norm=True,
                resblock_updown=True, **kwargs)


ADM_PRESETS: dict[str, ADMPreset] = {
    'adm-imagenet64-cond': ADMPreset(
        unet_kwargs=_unet_kwargs(64, 192, 3, (1, 2, 3, 4), (32, 16, 8), class_cond=True, dropout=0.1,
                                 num_head_channels=64, use_new_attention_order=True),
        schedule='ddpm-cosine', learn_sigma=True, class_cond=True, checkpoint='64x64_diffusion.pt'),
    'adm-imagenet128-cond': ADMPreset(
        unet_kwargs=_unet_kwargs(128, 256, 2, (1, 1, 2, 3, 4), (32, 16, 8), class_cond=True, dropout=0.0,
                                 num_heads=4, num_head_channels=-1),
        schedule='ddpm-linear', learn_sigma=True, class_cond=True, checkpoint='128x128_diffusion.pt'),
    'adm-lsun-bedroom256': ADMPreset(
        unet_kwargs=_unet_kwargs(256, 256, 2, (1, 1, 2, 2, 4, 4), (32, 16, 8), class_cond=False, dropout=0.1,
                                 num_head_channels=64),
        schedule='ddpm-linear', learn_sigma=True, class_cond=False, checkpoint='lsun_bedroom.pt'),
}


def get_adm_preset(preset: str) -> ADMPreset:
    """Look up a preset by name; the error lists the valid names."""
    if preset not in ADM_PRESETS:
        raise ValueError(f'preset={preset!r}: expected one of {list(ADM_PRESETS)}')
    return ADM_PRESETS[preset]


def build_adm(preset: str, channels_scale: float = 1.0, image_size: int | None = None) -> ADMUNet:
    """Construct the (randomly initialised) ADMUNet of a preset; channels_scale < 1 and image_size shrink it for tests.

    model_channels becomes a multiple of 32 (GroupNorm groups) near channels_scale * C, num_head_channels the largest
    divisor of it at most channels_scale * heads; at scale 1 the keys and shapes match the released checkpoint.
    """
    kwargs = dict(get_adm_preset(preset).unet_kwargs)
    if not (isinstance(channels_scale, (int, float)) and 0 < channels_scale <= 1):
        raise ValueError(f'channels_scale={channels_scale!r}: expected a number in (0, 1]')
    if channels_scale != 1:
        C = max(GROUPS, GROUPS * round(kwargs['model_channels'] * channels_scale / GROUPS))
        kwargs['model_channels'] = C
        if kwargs.get('num_head_channels', -1) != -1:
            target = max(1.0, kwargs['num_head_channels'] * channels_scale)
            kwargs['num_head_channels'] = max(d for d in range(1, C + 1) if C % d == 0 and d <= target)
    if image_size is not None:
        factor = 2 ** (len(kwargs['channel_mult']) - 1)
        if not isinstance(image_size, int) or image_size <= 0 or image_size % factor:
            raise ValueError(f'image_size={image_size!r}: expected a positive multiple of {factor} for preset '
                             f'{preset!r}')
        kwargs['image_size'] = image_size
    return ADMUNet(**kwargs)


class ADMDenoiser(torch.nn.Module):
    """Frozen ADM eps-predictor behind the Denoiser interface: forward(x, sigma, labels) -> D(x; sigma) [N, C, H, W].

    Parameters never need gradients (eval mode, requires_grad False, and train() keeps it in eval mode); gradients
    with respect to x flow normally, which SMaRt needs.
    """

    def __init__(self,
        unet: ADMUNet,                      # guided-diffusion UNet with weights loaded.
        schedule: NoiseSchedule,            # The checkpoint's training schedule (maps sigma <-> t).
        learn_sigma: bool,                  # True = the UNet outputs [eps, v]; only eps is used.
    ):
        super().__init__()
        channels = unet.out_channels // 2 if learn_sigma else unet.out_channels
        if channels != unet.in_channels:
            raise ValueError(f'learn_sigma={learn_sigma} with out_channels={unet.out_channels}: expected '
                             f'{"2 *" if learn_sigma else "the same as"} in_channels={unet.in_channels}')
        self.unet = unet.eval().requires_grad_(False)
        self.schedule = schedule
        self.learn_sigma = learn_sigma
        self.img_resolution = unet.image_size
        self.img_channels = unet.in_channels
        self.label_dim = unet.num_classes or 0
        self.sigma_min = schedule.sigma_min
        self.sigma_max = schedule.sigma_max

    @classmethod
    def from_preset(cls, preset: str, state_dict: dict | None = None, channels_scale: float = 1.0,
                    image_size: int | None = None) -> 'ADMDenoiser':
        """Build a preset's denoiser; `state_dict` (a released checkpoint) is loaded strictly and its tensors become
        the parameters (shared storage, no copy)."""
        spec = get_adm_preset(preset)
        if state_dict is None:
            unet = build_adm(preset, channels_scale=channels_scale, image_size=image_size)
        else:
            with torch.device('meta'):  # Skip the random init of up to 550M parameters that the checkpoint replaces.
                unet = build_adm(preset, channels_scale=channels_scale, image_size=image_size)
            unet.load_state_dict(state_dict, strict=True, assign=True)
            unet.float()  # Checkpoints hold float32 masters; a half-precision copy would break the float32 Linears.
        return cls(unet, get_schedule(spec.schedule), learn_sigma=spec.learn_sigma)

    def train(self, mode: bool = True) -> 'ADMDenoiser':
        """Stay in eval mode: dropout must never act on a frozen score source."""
        return super().train(False)

    @property
    def sigma_grid(self) -> torch.Tensor:
        """The noise levels the model was trained on, float64 [num_steps] ascending (index = native step t)."""
        return torch.from_numpy(self.schedule.sigma_grid)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        """D(x; sigma) for x = x0 + sigma eps [N, C, H, W], sigma scalar / [N] (snapped), labels [N, label_dim]."""
        self._check_x(x)
        N = x.shape[0]
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.tensor(sigma, dtype=torch.float64)  # Python floats snap without a float32 detour.
        sigma = sigma.to(x.device)
        if sigma.numel() not in (1, N):
            raise ValueError(f'sigma has shape {list(sigma.shape)}: expected a scalar, [{N}] or [{N}, 1, 1, 1]')
        t = self.schedule.t_for_sigma(sigma.reshape(-1)).expand(N)                    # [N] native steps
        sigma_t = self.schedule.sigma_hat(t).to(x.dtype).reshape(N, 1, 1, 1)          # Snapped sigma_hat.
        alpha_t = (1 + sigma_t.square()).rsqrt()
        eps = self.unet(alpha_t * x, t, y=self._class_ids(labels, N))[:, :self.img_channels]  # [N, C, H, W]
        return x - sigma_t * eps.to(x.dtype)

    def _check_x(self, x: torch.Tensor) -> None:
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'x has shape {shape}: expected [N, {", ".join(map(str, expected))}] (the model is '
                             f'{self.img_resolution}x{self.img_resolution}; resize the images to match)')

    def _class_ids(self, labels: torch.Tensor | None, N: int) -> torch.Tensor | None:
        """One-hot (or soft) labels [N, label_dim] -> class ids [N] by argmax; None for an unconditional model."""
        if self.label_dim == 0:
            return None  # Like EDM's preconditioners, an unconditional model ignores labels.
        if labels is None:
            raise ValueError(f'labels is None but the ADM model is class-conditional: pass one-hot labels '
                             f'[N, {self.label_dim}]')
        if labels.shape != (N, self.label_dim):
            raise ValueError(f'labels has shape {list(labels.shape)}: expected [{N}, {self.label_dim}]')
        return labels.argmax(dim=1)

    def extra_repr(self) -> str:
        return (f'img_resolution={self.img_resolution}, label_dim={self.label_dim}, schedule={self.schedule.name}, '
                f'sigma in [{self.sigma_min:.4g}, {self.sigma_max:.4g}]')

"""The plugin interface of the GAN loss: how SMaRt, Diffusion-GAN and future regularizers hook into training.

The training loop and `training.loss` know only this base class; concrete plugins live in `smart_plugin/` and are
built by the CLI (train.py). Every hook is a no-op here, so a plugin overrides only what it needs, and a run
without plugins (or with disabled ones) is bit-identical to the plain StyleGAN2-ADA loss.

Call order per training iteration (every rank calls every hook, in the same order):
  1. the loss calls `transform_D_input` on every discriminator input (real and fake, in every phase), after the
     ADA augmentation, and `G_penalty` on the generated batch of each Gmain/Gboth accumulation round (before
     it, `wants_G_grad_norm`: if any plugin says yes, the loss reports Loss/G/grad_norm);
  2. the loop calls `end_of_step` once after all phases of the iteration (optimizer steps and EMA done);
  3. at the end of every tick the loop calls `end_of_tick` with the tick's collected stats (the same on all ranks).
`preflight` runs before the run dir exists (on CPU copies of the networks); `setup` runs once, after the networks
exist and before the first iteration (also after a resume).
"""

from typing import Any

import torch


class LossPlugin:
    """Base class with no-op hooks; see the module docstring for when each is called."""

    name: str = "plugin"   # Key of this plugin's state in snapshots and options; unique per run.
    extra_c_dim: int = 0   # Conditioning entries appended to D's labels by transform_D_input (D is built with them).

    def preflight(self, *, G: torch.nn.Module, training_set: Any) -> None:
        """Check the plugin against the configured generator and data before anything is written; raise ValueError
        (an OptionError naming the field) on a misfit. What it loads it may keep for `setup`."""

    def setup(self, *, G: torch.nn.Module, D: torch.nn.Module, training_set: Any, device: torch.device,
              rank: int, num_gpus: int) -> None:
        """Bind to the run: networks (unwrapped), the training set (for statistics), the device and the rank."""

    def transform_D_input(self, img: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map D's input image [N, C, H, W] in [-1, 1] and labels [N, c_dim] to what D sees; differentiable in img.

        Must return labels of width c_dim + extra_c_dim (the loop builds D that way).
        """
        return img, c

    def G_penalty(self, gen_img: torch.Tensor, gen_c: torch.Tensor) -> torch.Tensor | None:
        """Extra generator loss per sample [N] for this Gmain round, or None on iterations where the plugin is idle.

        Gradients must reach G only through gen_img. The loss adds it to the main G loss before backward.
        """
        return None

    def wants_G_grad_norm(self) -> bool:
        """Whether the loss should report Loss/G/grad_norm (per-sample norm of the adversarial term's gradient in the
        generated image) this Gmain round; it costs an extra autograd pass through D, so off unless asked."""
        return False

    def end_of_step(self, cur_nimg: int, batch_size: int) -> None:
        """Update adaptive state once per iteration (after the optimizer steps); cur_nimg counts images so far."""

    def end_of_tick(self, stats: dict) -> list[str]:
        """Check the tick's stats ({name: EasyDict(num, mean, std)}); return warning lines to log, or raise to stop."""
        return []

    def state_dict(self) -> dict:
        """Everything needed to resume this plugin exactly (plain Python values and tensors)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""

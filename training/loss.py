"""The StyleGAN2 training loss, split into the phases of lazy regularization, with hooks for loss plugins.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2, CVPR 2020): non-saturating
logistic loss, style mixing, path-length regularization and lazy R1 (Mescheder et al. 2018); with the ADA
augmentation of Karras et al., "Training Generative Adversarial Networks with Limited Data" (NeurIPS 2020) applied
to every discriminator input. Plugins (`training.loss_plugin.LossPlugin`: SMaRt, Diffusion-GAN) transform D's
input after the augmentation and add per-sample generator penalties to the main G loss.

Phases (docs/spec/stylegan2-ada.md section 4.5): Gmain, Greg, Gboth, Dmain, Dreg, Dboth. The training loop owns the
requires_grad toggling, the optimizers and the cross-rank gradient all_reduce; this module only accumulates
`.grad` through `.backward()`. Random draws (style mixing, path-length noise, synthesis noise) come from torch's
global RNG on the device, in the official order, so runs without plugins (or with disabled ones) reproduce the
same draws, losses and gradients.
"""

import math
import numbers

import torch
import torch.nn.functional as F

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training.loss_plugin import LossPlugin

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')
_record = torch.autograd.profiler.record_function


def _check_real(name, value, low, high=math.inf):
    """Raise ValueError unless `value` is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        expected = f'>= {low}' if high == math.inf else f'in [{low}, {high}]'
        raise ValueError(f'{name} must be a number {expected}, got {value!r}')


class StyleGAN2Loss:
    """Accumulates the gradients of one StyleGAN2 training phase into G or D; see the module docstring."""

    def __init__(self,
        device,                         # Device of G, D and the batches (pl_mean lives here).
        G,                              # Generator (unwrapped): G.mapping(z, c, ...) -> ws, G.synthesis(ws) -> img.
        D,                              # Discriminator (unwrapped): D(img, c) -> logits [N, 1].
        augment_pipe=None,              # ADA pipeline applied to every D input (img -> img); None = no augmentation.
        plugins=(),                     # LossPlugin objects, applied in list order after the augmentation.
        r1_gamma=10,                    # R1 weight gamma; 0 = Dreg does nothing and Dboth is Dmain.
        style_mixing_prob=0.9,          # Probability of mixing the styles of two z for a whole batch; 0 = never.
        pl_weight=2,                    # Path-length penalty weight; 0 = Greg does nothing and Gboth is Gmain.
        pl_batch_shrink=2,              # Path-length batch = N // pl_batch_shrink.
        pl_decay=0.01,                  # Decay of the running mean path length pl_mean.
        pl_no_weight_grad=False,        # Skip conv weight gradients while taking the path-length gradient (speed).
    ):
        for name, module in (('G', G), ('D', D)):
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f'{name} must be a torch.nn.Module, got {type(module).__name__}')
        if augment_pipe is not None and not callable(augment_pipe):
            raise TypeError(f'augment_pipe must be callable (img -> img) or None, got {type(augment_pipe).__name__}')
        self.plugins = self._check_plugins(plugins)
        _check_real('r1_gamma', r1_gamma, 0)
        _check_real('style_mixing_prob', style_mixing_prob, 0, 1)
        _check_real('pl_weight', pl_weight, 0)
        _check_real('pl_decay', pl_decay, 0, 1)
        if isinstance(pl_batch_shrink, bool) or not isinstance(pl_batch_shrink, int) or pl_batch_shrink < 1:
            raise ValueError(f'pl_batch_shrink must be an int >= 1, got {pl_batch_shrink!r}')
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_no_weight_grad = bool(pl_no_weight_grad)
        self.pl_mean = torch.zeros([], device=self.device)  # Running mean path length a (StyleGAN2 eq. 4).

    @staticmethod
    def _check_plugins(plugins) -> list:
        """Return `plugins` as a list after checking their types and that their names are unique."""
        if isinstance(plugins, LossPlugin) or not isinstance(plugins, (list, tuple)):
            raise TypeError(f'plugins must be a list or tuple of LossPlugin objects, got {type(plugins).__name__}')
        names = []
        for plugin in plugins:
            if not isinstance(plugin, LossPlugin):
                raise TypeError(f'plugins must hold LossPlugin objects, got {type(plugin).__name__}')
            if plugin.name in names:
                raise ValueError(f'plugins must have unique names, got {plugin.name!r} twice; rename one of them')
            names.append(plugin.name)
        return list(plugins)

    def run_G(self, z, c):
        """Generate images [N, C, H, W] and the ws [N, num_ws, w_dim] they came from, with style mixing."""
        ws = self.G.mapping(z, c)  # [N, num_ws, w_dim]; updates w_avg in training mode
        if self.style_mixing_prob > 0:
            with _record('style_mixing'):
                # One cutoff for the whole batch, drawn on the device without a host sync; cutoff = num_ws means
                # "no mixing", so the second mapping always runs and the RNG stream does not depend on the coin.
                num_ws = ws.shape[1]
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                     torch.full_like(cutoff, num_ws))
                ws2 = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)  # [N, num_ws, w_dim]
                from_second = (torch.arange(num_ws, device=ws.device) >= cutoff)[None, :, None]  # [1, num_ws, 1]
                ws = torch.where(from_second, ws2, ws)
        img = self.G.synthesis(ws)  # in the module's current mode: training mode means non-fused modconv
        return img, ws

    def run_D(self, img, c):
        """Logits [N] of D on img [N, C, H, W] after the ADA augmentation and each plugin's input transform."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        for plugin in self.plugins:
            img, c = plugin.transform_D_input(img, c)
        return self.D(img, c)[:, 0]

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        """Run `phase` on one batch and add its gradients, scaled by `gain` (the phase interval), to the .grad fields.

        real_img [N, C, H, W] float32 in [-1, 1]; real_c, gen_c [N, c_dim]; gen_z [N, z_dim]. cur_nimg (images shown
        so far) is accepted for schedule-driven losses (StyleGAN3's D blur); the StyleGAN2 loss does not use it.
        """
        if phase not in PHASES:
            raise ValueError(f'phase must be one of {", ".join(PHASES)}, got {phase!r}')
        _check_real('gain', gain, 0)
        if isinstance(cur_nimg, bool) or not isinstance(cur_nimg, numbers.Integral) or cur_nimg < 0:
            raise ValueError(f'cur_nimg must be an int >= 0, got {cur_nimg!r}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0

        if do_Gmain:
            self._accumulate_G_main(gen_z, gen_c, gain)
        if do_Gpl:
            self._accumulate_G_pl(gen_z, gen_c, gain)
        loss_Dgen = 0
        if do_Dmain:
            loss_Dgen = self._accumulate_D_fake(gen_z, gen_c, gain)
        if do_Dmain or do_Dr1:
            self._accumulate_D_real(real_img, real_c, gain, loss_Dgen, do_Dmain, do_Dr1)

    def _accumulate_G_main(self, gen_z, gen_c, gain):
        """Gmain: non-saturating loss softplus(-D(G(z))) plus the plugins' per-sample G penalties."""
        with _record('Gmain_forward'):
            gen_img, _gen_ws = self.run_G(gen_z, gen_c)  # [N, C, H, W]
            gen_logits = self.run_D(gen_img, gen_c)  # [N]
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Gmain = F.softplus(-gen_logits)  # -log sigmoid(D(G(z)))
            training_stats.report('Loss/G/loss', loss_Gmain)
            if gen_img.requires_grad and any(p.wants_G_grad_norm() for p in self.plugins):  # Diagnostics; no .grad.
                (grad,) = torch.autograd.grad(loss_Gmain.sum(), gen_img, retain_graph=True)  # [N, C, H, W]
                training_stats.report('Loss/G/grad_norm', grad.flatten(1).norm(dim=1))
            loss_G = loss_Gmain
            for plugin in self.plugins:
                penalty = plugin.G_penalty(gen_img, gen_c)
                if penalty is None:
                    continue
                if not isinstance(penalty, torch.Tensor) or tuple(penalty.shape) != tuple(loss_Gmain.shape):
                    got = list(penalty.shape) if isinstance(penalty, torch.Tensor) else type(penalty).__name__
                    raise ValueError(f'plugin {plugin.name!r}: G_penalty must return None or a tensor of shape '
                                     f'{list(loss_Gmain.shape)} (one value per sample), got {got}')
                loss_G = loss_G + penalty
        with _record('Gmain_backward'):
            loss_G.mean().mul(gain).backward()

    def _accumulate_G_pl(self, gen_z, gen_c, gain):
        """Greg: path-length penalty (|J_w^T y| - a)^2 on N // pl_batch_shrink samples (StyleGAN2 eq. 4)."""
        batch_size = gen_z.shape[0] // self.pl_batch_shrink
        if batch_size < 1:
            raise ValueError(f'gen_z has {gen_z.shape[0]} samples, but the path-length phase needs at least '
                             f'pl_batch_shrink={self.pl_batch_shrink}; use a larger batch per GPU')
        with _record('Gpl_forward'):
            gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])  # [n, C, H, W], [n, num_ws, w_dim]
            # y ~ N(0, I) / sqrt(H W) keeps E|J^T y| independent of the resolution.
            pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
            with _record('pl_grads'), conv2d_gradfix.no_weight_gradients(self.pl_no_weight_grad):
                (pl_grads,) = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                                  create_graph=True, only_inputs=True)  # [n, num_ws, w_dim]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()  # [n]
            # The penalty uses the updated (non-detached) mean, as the official code does; only its value persists.
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()  # [n]
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
        with _record('Gpl_backward'):
            # The zero-weighted image term keeps every synthesis parameter in the graph (DDP-style bookkeeping).
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _accumulate_D_fake(self, gen_z, gen_c, gain):
        """Dmain, fake half: softplus(D(G(z))) with G not differentiated; returns the per-sample loss [N]."""
        with _record('Dgen_forward'):
            with torch.no_grad():
                gen_img, _gen_ws = self.run_G(gen_z, gen_c)  # [N, C, H, W]
            gen_logits = self.run_D(gen_img, gen_c)  # [N]
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = F.softplus(gen_logits)  # -log(1 - sigmoid(D(G(z))))
        with _record('Dgen_backward'):
            loss_Dgen.mean().mul(gain).backward()
        return loss_Dgen.detach()

    def _accumulate_D_real(self, real_img, real_c, gain, loss_Dgen, do_Dmain, do_Dr1):
        """Dmain real half softplus(-D(x)) and/or R1 gamma/2 |grad_x D(x)|^2, sharing one D forward (Dboth)."""
        name = 'Dreal_Dr1' if do_Dmain and do_Dr1 else 'Dreal' if do_Dmain else 'Dr1'
        with _record(name + '_forward'):
            # R1 differentiates w.r.t. the un-augmented real image, so the gradient also flows through the
            # augmentation and the plugin transforms.
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)  # [N, C, H, W]
            real_logits = self.run_D(real_img_tmp, real_c)  # [N]
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())

            loss_Dreal = 0
            if do_Dmain:
                loss_Dreal = F.softplus(-real_logits)  # -log sigmoid(D(x))
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
            loss_Dr1 = 0
            if do_Dr1:
                with _record('r1_grads'), conv2d_gradfix.no_weight_gradients():
                    (r1_grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                                      create_graph=True, only_inputs=True)  # [N, C, H, W]
                r1_penalty = r1_grads.square().sum([1, 2, 3])  # [N]
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
        with _record(name + '_backward'):
            (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()

    def state_dict(self) -> dict:
        """The loss state needed for an exact resume: {'pl_mean': scalar tensor}."""
        return {'pl_mean': self.pl_mean.detach().clone()}

    def load_state_dict(self, state) -> None:
        """Restore what state_dict() returned."""
        if not isinstance(state, dict) or set(state) != {'pl_mean'}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must be a dict with the single key 'pl_mean' (from StyleGAN2Loss.state_dict()), "
                             f"got {got}")
        pl_mean = torch.as_tensor(state['pl_mean'], dtype=torch.float32)
        if pl_mean.ndim != 0 or not torch.isfinite(pl_mean):
            raise ValueError(f"state['pl_mean'] must be a finite scalar, got {state['pl_mean']!r}")
        self.pl_mean.copy_(pl_mean.to(self.device))

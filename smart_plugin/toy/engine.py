"""Batched training of many 2-D toy GANs at once (SMaRt, Xia et al., ICML 2024, Figure 2).

R runs (methods x seeds x sweep points) with the same network shape train as one computation: the weights of the R
generators (and discriminators) are stacked along a leading run axis and every layer is one batched matmul
(`torch.baddbmm` on [R, N, in] x [R, in, out]). Each run keeps its own Adam moments and learning rate, its own random
streams and its own plugin instances, so a run's result does not depend on which other runs share the batch (a test
checks that a batched run equals the same run alone). On these small tensors one intra-op thread is fastest and is
what a busy machine can give without stalling (several threads wait on each other at every op).

Every run has three random streams, all seeded from its seed: `gen` (initial weights, real points, latents), the
plugin stream (the global RNG state swapped in while a run's plugins draw), and the fixed evaluation latents. The
plugins are the image trainer's LossPlugins, called per run on that run's [N, 2, 1, 1] slice exactly as
training/loss.py calls them; each run's statistics go to its own training_stats counters (Diffusion-GAN adapts to
the sign of its own run's D(real) only).

Loss: non-saturating logistic (StyleGAN2-ADA's), one D step then one G step per iteration.
"""

import contextlib
import dataclasses
import io
import math
import types
import weakref

import torch
import torch.nn.functional as F

from smart_plugin.toy.config import ToyConfig, build_plugins
from smart_plugin.toy.mixture import GridMixture
from torch_utils import training_stats

SLOPE = 0.2          # LeakyReLU negative slope.
ADAM_EPS = 1e-8      # Adam's epsilon (torch.optim.Adam's default).
C_DIM = 1            # D's label width: Diffusion-GAN's t / t_max; 0 (and a zero weight row) for the other methods.
PLUGIN_SEED = 7_919  # Offset of a run's plugin stream from its seed.


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a method, a seed and its config; `label` is its key in the results (method or method[point])."""
    method: str
    seed: int
    cfg: ToyConfig
    label: str


def _uniform(shape: tuple, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def init_mlp(dims: list[int], fan_in0: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Weights [in, out] and biases [1, out] of one MLP, torch.nn.Linear's default init U(+-1/sqrt(fan_in)).

    The first layer draws only its first fan_in0 input rows; the others are 0 (an input that this run never uses
    then never moves them: its gradient is 0)."""
    params = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        fan_in = fan_in0 if i == 0 else d_in
        W = torch.zeros([d_in, d_out])
        W[:fan_in] = _uniform((fan_in, d_out), 1 / math.sqrt(fan_in), gen)
        params += [W, _uniform((1, d_out), 1 / math.sqrt(fan_in), gen)]
    return params


def mlp_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Stacked MLP: x [R, N, in] -> [R, N, out], LeakyReLU between layers; params alternate W [R, in, out], b."""
    last = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        x = torch.baddbmm(params[i + 1], x, params[i])
        if i // 2 < last:
            x = F.leaky_relu(x, SLOPE)
    return x


class StackedAdam:
    """Adam (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam) on stacked parameters with a learning rate per run."""

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, betas: tuple[float, float]) -> None:
        self.params, self.betas, self.t = params, betas, 0
        self.lr = lr.reshape(-1, 1, 1).double()      # [R, 1, 1]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        b1, b2 = self.betas
        self.t += 1
        step_size = (-self.lr / (1 - b1 ** self.t)).float()   # [R, 1, 1]
        root_bc2 = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m * step_size, v.sqrt().div_(root_bc2).add_(ADAM_EPS))


@contextlib.contextmanager
def run_context(run: 'RunState'):
    """Run code with this run's global RNG state and training_stats counters swapped in (plugins draw and report
    there), and swap them back out afterwards."""
    rng, counters, collectors = torch.get_rng_state(), training_stats._counters, training_stats._collectors
    torch.set_rng_state(run.rng_state)
    training_stats._counters, training_stats._collectors = run.counters, run.collectors
    try:
        yield
    finally:
        run.rng_state = torch.get_rng_state()
        training_stats._counters, training_stats._collectors = counters, collectors
        torch.set_rng_state(rng)


@dataclasses.dataclass
class RunState:
    """The per-run parts that are not stacked: random streams, plugins and statistics."""
    spec: RunSpec
    mixture: GridMixture
    gen: torch.Generator
    rng_state: torch.Tensor
    plugins: list
    counters: dict = dataclasses.field(default_factory=dict)
    collectors: weakref.WeakSet = dataclasses.field(default_factory=weakref.WeakSet)
    setup_lines: str = ''


class BatchedToy:
    """R toy GANs of one shape (z_dim, width, depth, batch) trained as one computation (module docstring)."""

    def __init__(self, specs: list[RunSpec], states: list[dict] | None = None, phase_steps: int | None = None) -> None:
        """Build the runs; `states` (from export_state) continues them from there (weights, Adam, random streams).
        `phase_steps` is the length of this phase (SMaRt's warm-up is a fraction of it; default cfg.steps)."""
        cfg0 = specs[0].cfg
        for spec in specs:
            shape = {f: getattr(spec.cfg, f) for f in ('z_dim', 'width', 'depth', 'batch', 'betas')}
            if shape != {f: getattr(cfg0, f) for f in shape}:
                raise ValueError(f'run {spec.label} seed {spec.seed} has {shape}; a batched group needs one shape')
        self.specs, self.R, self.N, self.z_dim = specs, len(specs), cfg0.batch, cfg0.z_dim
        self.runs, G_params, D_params = [], [], []
        for spec in specs:
            gen = torch.Generator().manual_seed(spec.seed)
            G_params.append(init_mlp([cfg0.z_dim] + [cfg0.width] * cfg0.depth + [2], cfg0.z_dim, gen))
            c_dim = C_DIM if spec.method in ('diffgan', 'smart_diffgan') else 0
            D_params.append(init_mlp([2 + C_DIM] + [cfg0.width] * cfg0.depth + [1], 2 + c_dim, gen))
            rng = torch.Generator().manual_seed(PLUGIN_SEED + spec.seed).get_state()
            mixture = GridMixture(spec.cfg.grid, spec.cfg.spacing, spec.cfg.std)
            self.runs.append(RunState(spec, mixture, gen, rng, []))
        self.G = [torch.stack(p).requires_grad_() for p in zip(*G_params)]   # W [R, in, out], b [R, 1, out]
        self.D = [torch.stack(p).requires_grad_() for p in zip(*D_params)]
        self.scale = torch.tensor([s.cfg.net_scale for s in specs]).reshape(-1, 1, 1)   # [R, 1, 1]
        lr_G = [s.cfg.lr_G if states is None or s.cfg.finetune_lr is None else s.cfg.finetune_lr for s in specs]
        lr_D = [s.cfg.lr_D if states is None or s.cfg.finetune_lr is None else s.cfg.finetune_lr for s in specs]
        self.opt_G = StackedAdam(self.G, torch.tensor(lr_G), cfg0.betas)
        self.opt_D = StackedAdam(self.D, torch.tensor(lr_D), cfg0.betas)
        if states is not None:
            self._load_states(states)
        G_stub = types.SimpleNamespace(z_dim=cfg0.z_dim, c_dim=0, img_resolution=1, img_channels=2)
        for run in self.runs:
            cfg = dataclasses.replace(run.spec.cfg, steps=phase_steps or run.spec.cfg.steps)
            run.plugins = build_plugins(run.spec.method, cfg, run.mixture)
            out = io.StringIO()
            with run_context(run), contextlib.redirect_stdout(out):
                for plugin in run.plugins:
                    plugin.setup(G=G_stub, D=None, training_set=None, device=torch.device('cpu'), rank=0, num_gpus=1)
            run.setup_lines = out.getvalue()
        self.cur_nimg = 0

    # --- state for fine-tuning branches ---------------------------------------------------------------------------
    def export_state(self, r: int) -> dict:
        """Run r's weights, Adam moments and step, and random streams (plugins are rebuilt on a branch)."""
        return {'G': [p[r].detach().clone() for p in self.G], 'D': [p[r].detach().clone() for p in self.D],
                'mG': [m[r].clone() for m in self.opt_G.m], 'vG': [v[r].clone() for v in self.opt_G.v],
                'mD': [m[r].clone() for m in self.opt_D.m], 'vD': [v[r].clone() for v in self.opt_D.v],
                't': self.opt_G.t, 'gen': self.runs[r].gen.get_state(), 'rng': self.runs[r].rng_state.clone()}

    def _load_states(self, states: list[dict]) -> None:
        if len(states) != self.R or len({s['t'] for s in states}) != 1:
            raise ValueError('states must hold one state per run, all after the same number of steps')
        for key, tensors in (('G', self.G), ('D', self.D), ('mG', self.opt_G.m), ('vG', self.opt_G.v),
                             ('mD', self.opt_D.m), ('vD', self.opt_D.v)):
            with torch.no_grad():
                for i, t in enumerate(tensors):
                    t.copy_(torch.stack([s[key][i] for s in states]))
        self.opt_G.t = self.opt_D.t = states[0]['t']
        for run, s in zip(self.runs, states):
            run.gen.set_state(s['gen'])
            run.rng_state = s['rng'].clone()

    # --- networks -------------------------------------------------------------------------------------------------
    def G_forward(self, z: torch.Tensor) -> torch.Tensor:
        """Points [R, M, 2] of latents z [R, M, z_dim]."""
        return mlp_forward(self.G, z) * self.scale

    def D_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, M] of D inputs x [R, M, 2 + C_DIM] (point, label)."""
        return mlp_forward(self.D, torch.cat([x[..., :2] / self.scale, x[..., 2:]], dim=-1)).squeeze(-1)

    def latents(self, n: int) -> torch.Tensor:
        """Fresh latents [R, n, z_dim], each run from its own stream."""
        return torch.stack([torch.randn([n, self.z_dim], generator=run.gen) for run in self.runs])

    def D_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """D's inputs [R, M, 2 + C_DIM] of points x [R, M, 2]: each run's plugins transform its slice, add labels."""
        plain = torch.cat([x, x.new_zeros([*x.shape[:2], C_DIM])], dim=2)           # Runs without plugins.
        if not any(run.plugins for run in self.runs):
            return plain
        rows = list(plain.unbind(0))
        for r, run in enumerate(self.runs):
            if run.plugins:
                img, c = x[r].reshape(-1, 2, 1, 1), x.new_zeros([x.shape[1], 0])
                with run_context(run):
                    for plugin in run.plugins:
                        img, c = plugin.transform_D_input(img, c)
                rows[r] = torch.cat([img.reshape(-1, 2), c, x.new_zeros([x.shape[1], C_DIM - c.shape[1]])], dim=1)
        return torch.stack(rows)

    # --- one iteration --------------------------------------------------------------------------------------------
    def step(self) -> dict:
        """One D step and one G step for every run; returns the losses [R] of both."""
        N = self.N
        real = torch.stack([run.mixture.sample(N, run.gen) for run in self.runs])   # [R, N, 2]
        with torch.no_grad():
            fake = self.G_forward(self.latents(N))                                   # [R, N, 2]
        D_in = torch.cat([self.D_inputs(real), self.D_inputs(fake)], dim=1)          # [R, 2N, 3]
        logits = self.D_forward(D_in)                                                # [R, 2N]
        real_logits, fake_logits = logits[:, :N], logits[:, N:]
        for r, run in enumerate(self.runs):
            if run.plugins:
                with run_context(run):
                    training_stats.report('Loss/signs/real', real_logits[r].detach().sign())
        loss_D = (F.softplus(fake_logits) + F.softplus(-real_logits)).mean(dim=1)   # [R]
        self.opt_D.step(torch.autograd.grad(loss_D.sum(), self.D))

        gen = self.G_forward(self.latents(N))                                        # [R, N, 2]
        loss_G = F.softplus(-self.D_forward(self.D_inputs(gen))).mean(dim=1)         # [R]
        self._G_step(loss_G.sum() + self._penalty(gen))
        return {'loss_D': loss_D.detach(), 'loss_G': loss_G.detach()}

    def pull_step(self) -> torch.Tensor:
        """One G step on the plugins' penalties alone (no adversarial loss; D is untouched); returns the total."""
        penalty = self._penalty(self.G_forward(self.latents(self.N)))
        self._G_step(penalty)
        return penalty.detach()

    def _penalty(self, gen: torch.Tensor) -> torch.Tensor:
        """Sum over runs of the mean plugin penalty (G_penalty) of generated points gen [R, N, 2]; 0 without any."""
        penalties = []
        for r, run in enumerate(self.runs):
            if run.plugins:
                with run_context(run):
                    for plugin in run.plugins:
                        penalty = plugin.G_penalty(gen[r].reshape(-1, 2, 1, 1), gen.new_zeros([gen.shape[1], 0]))
                        if penalty is not None:
                            penalties.append(penalty.mean())
        return torch.stack(penalties).sum() if penalties else gen.new_zeros([])

    def _G_step(self, loss: torch.Tensor) -> None:
        """An Adam step of every G on loss, then the plugins' end-of-step hooks."""
        if loss.requires_grad:
            self.opt_G.step(torch.autograd.grad(loss, self.G))
        self.cur_nimg += self.N
        for run in self.runs:
            if run.plugins:
                with run_context(run):
                    for plugin in run.plugins:
                        plugin.end_of_step(self.cur_nimg, self.N)

    @torch.no_grad()
    def sample(self, n: int, seed_offset: int, psi: float = 1.0) -> torch.Tensor:
        """n points [R, n, 2] per run from fixed latents (seed_offset + the run's seed) scaled by psi (truncation: psi
        < 1 pulls every latent toward the mean latent 0)."""
        z = torch.stack([torch.randn([n, self.z_dim], generator=torch.Generator().manual_seed(seed_offset + s.seed))
                         for s in self.specs])
        return self.G_forward(z * psi)

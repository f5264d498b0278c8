"""Tests for dpm/snapshot.py and dpm/training_loop.py: snapshots load through edm_bridge.loading without
running code from them (EDM, VP and NCSNv2 nets), the training state loads with weights_only, resume 2 + 2 == 4 bit
for bit, the EDM learning-rate ramp and EMA formulas, NaN gradient scrubbing, conditional STF rounds, and two gloo
processes keeping their replicas identical."""

import glob
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from free_port import free_port
from dpm import sigma_dist, snapshot as dpm_snapshot, training_loop as loop
from edm_bridge import loading
from tiny_datasets import make_zip
from torch_utils import training_stats
from torch_utils import distributed

SONG = dict(model_type='SongUNet', model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[],
            dropout=0.1)
NCSNV2 = dict(ngf=8, channel_mult=[1, 2], sigma_max=10.0, sigma_min=0.01, num_scales=20)
BAND = sigma_dist.BandMixture(sigma_dist.LogNormalSigma(), 0.1437, 0.2085, 0.5).describe()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp('data') / 'ds.zip', num=16, res=8, seed=3)


def _config(dataset, precond='edm', stf=True, augment=True, **overrides):
    net = dict(NCSNV2 if precond == 'ncsnv2' else SONG, **(dict(augment_dim=9) if augment else {}))
    config = dict(dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=dataset,
                                      use_labels=False, xflip=False),
                  precond=precond, network_kwargs=net, sigma_dist=BAND if precond == 'edm' else None,
                  loss_kwargs=dict(stf=True) if stf else {}, rbatch=12 if stf else None,
                  augment_kwargs=dict(p=0.5) if augment else None, batch_size=8, batch_gpu=4,
                  data_loader_kwargs=dict(num_workers=0), lr_rampup_kimg=0.01, ema_halflife_kimg=0.01,
                  log=lambda *args: None)
    return dict(config, **overrides)


def _train(run_dir, dataset, total_kimg, snapshot_ticks=100, **kwargs):
    return loop.training_loop(run_dir=str(run_dir), total_kimg=total_kimg, kimg_per_tick=0.008,
                              snapshot_ticks=snapshot_ticks, **_config(dataset, **kwargs))


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn([2, 3, 8, 8], generator=gen), torch.tensor([0.15, 2.0])


@pytest.mark.parametrize('precond', ['edm', 'vp', 'ncsnv2'])
def test_snapshot_loads_safely_without_running_code(tmp_path, dataset, monkeypatch, precond):
    result = _train(tmp_path, dataset, 0.016, precond=precond, stf=precond != 'ncsnv2')
    pkl = result.snapshot_pkl
    assert pkl == str(tmp_path / 'network-snapshot-000000.pkl')
    x, sigma = _inputs()
    with torch.no_grad():
        expected = result.state.ema(x, sigma)

    def refuse(meta):
        raise AssertionError('the safe loader must not rebuild objects from pickled source')
    monkeypatch.setattr('torch_utils.persistence._reconstruct_persistent_obj', refuse)
    with pytest.raises(AssertionError, match='must not rebuild'):  # The trap fires for a normal unpickle.
        loading.load_denoiser(pkl, trusted=True)
    D = loading.load_denoiser(pkl)
    assert type(D.net) is type(result.state.ema) and not D.training
    torch.testing.assert_close(D(x, sigma), expected, rtol=0, atol=0)
    info = loading.describe(pkl)
    assert info['preconditioning'] == type(result.state.ema).__name__ and info['architecture']['augment_dim'] == 9
    assert info['loss'] == {'edm': 'EDMLoss', 'vp': 'VPLoss', 'ncsnv2': 'NCSNv2Loss'}[precond]
    if precond == 'edm':
        assert info['training_sigma'] == BAND


def test_snapshot_contents(tmp_path, dataset):
    result = _train(tmp_path, dataset, 0.008)
    with open(result.snapshot_pkl, 'rb') as f:
        data = pickle.load(f)  # The trusted path works too: plain data and persistent objects.
    assert sorted(data) == ['augment_pipe', 'dataset_kwargs', 'ema', 'loss_fn', 'precond', 'training_sigma',
                            'training_state']
    assert data['training_state'] == 'training-state-000000.pt'  # Written before the snapshot, in the same folder.
    assert dpm_snapshot.state_of_snapshot(result.snapshot_pkl) == str(tmp_path / 'training-state-000000.pt')
    assert data['loss_fn'] == dict(class_name='EDMLoss', sigma_dist=BAND, sigma_data=0.5, stf=True, stf_chunk=256)
    assert data['precond'] == dict(class_name='EDMPrecond', sigma_data=0.5, sigma_min=0.0, sigma_max=float('inf'))
    assert data['training_sigma'] == BAND and data['dataset_kwargs']['path'] == dataset
    assert type(data['augment_pipe']).__name__ == 'AugmentPipe' and not data['ema'].training
    assert not any(p.requires_grad for p in data['ema'].parameters())


def test_training_state_loads_with_weights_only(tmp_path, dataset):
    _train(tmp_path, dataset, 0.016)
    path = str(tmp_path / 'training-state-000000.pt')
    state = torch.load(path, weights_only=True)
    assert (state['version'], state['cur_nimg'], state['batch_idx'], state['cur_tick']) == (1, 16, 2, 2)
    assert sorted(state) == ['batch_idx', 'batch_size', 'cur_nimg', 'cur_tick', 'elapsed_sec', 'ema', 'loss', 'net',
                             'optimizer', 'rbatch', 'rng', 'version']
    (tmp_path / 'bad.pt').write_bytes(pickle.dumps({'x': object()}, protocol=2))
    with pytest.raises(ValueError, match=re.escape(f"resume state '{tmp_path / 'bad.pt'}' is not a training-state")):
        dpm_snapshot.load_training_state(str(tmp_path / 'bad.pt'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        dpm_snapshot.load_training_state(str(tmp_path / 'missing.pt'))


def test_resume_two_plus_two_equals_four(tmp_path, dataset):
    straight = _train(tmp_path / 'a', dataset, 0.032, snapshot_ticks=None).state
    _train(tmp_path / 'b', dataset, 0.016)
    state_pt = sorted(glob.glob(str(tmp_path / 'b' / 'training-state-*.pt')))[-1]
    resumed = _train(tmp_path / 'c', dataset, 0.032, snapshot_ticks=None, resume_state=state_pt).state
    assert (resumed.cur_nimg, resumed.cur_tick, resumed.batch_idx) == (straight.cur_nimg, straight.cur_tick, 4)
    for name in ('net', 'ema'):
        a, b = straight[name].state_dict(), resumed[name].state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert not torch.equal(straight.net.state_dict()['model.map_layer0.weight'],
                           straight.ema.state_dict()['model.map_layer0.weight'])


def test_resume_with_other_loss_options_says_it_is_not_exact(tmp_path, dataset):
    _train(tmp_path, dataset, 0.008)
    path = str(tmp_path / 'training-state-000000.pt')
    lines = []
    _train(tmp_path / 'same', dataset, 0.016, resume_state=path, log=lines.append)
    assert not any(line.startswith('Note:') for line in lines), lines
    _train(tmp_path / 'plain', dataset, 0.016, resume_state=path, stf=False, sigma_dist=None, log=lines.append)
    notes = [line for line in lines if line.startswith('Note:')]  # --stf / --band-share not repeated on resume.
    assert len(notes) == 1 and "'stf': True" in notes[0] and "'stf': False" in notes[0], lines


def test_resume_into_another_architecture_names_the_state(tmp_path, dataset):
    _train(tmp_path, dataset, 0.008)
    path = str(tmp_path / 'training-state-000000.pt')
    with pytest.raises(ValueError, match=re.escape(f"resume state '{path}' does not fit the configured network")):
        _train(tmp_path / 'x', dataset, 0.016, augment=False, resume_state=path)


def test_first_step_has_zero_lr_then_ema_follows_edm_formula(dataset):
    s = loop.setup(**_config(dataset, stf=False, augment=False))
    before = [p.detach().clone() for p in s.net.parameters()]
    loop.training_step(s)  # EDM's ramp: lr = base * min(0 / ramp, 1) = 0 at the first step.
    assert s.optimizer.param_groups[0]['lr'] == 0 and s.cur_nimg == 8
    assert all(torch.equal(a, b) for a, b in zip(before, s.net.parameters()))
    loop.training_step(s)
    assert s.optimizer.param_groups[0]['lr'] == pytest.approx(1e-3 * 8 / 10)  # Default lr 1e-3, 8 of 10 ramp images.
    assert not all(torch.equal(a, b) for a, b in zip(before, s.net.parameters()))
    with torch.no_grad():
        for p in s.ema.parameters():
            p.fill_(0)
        for p in s.net.parameters():
            p.fill_(1)
    s.cur_nimg, s.ema_halflife_kimg, s.ema_rampup_ratio = 1000, 0.5, 0.05
    loop.update_ema(s)  # half-life min(500, 1000 * 0.05) = 50 images: ema = 1 - 0.5 ** (8 / 50).
    assert float(next(s.ema.parameters()).flatten()[0]) == pytest.approx(1 - 0.5 ** (8 / 50), rel=1e-6)


def test_library_defaults_are_edms_half_life_and_ramp(dataset):
    # EDM (docs/spec/diffusion.md section 3): EMA half-life 0.5 Mimg = 500 kimg with a 5% ramp, lr ramp 10 Mimg.
    config = {k: v for k, v in _config(dataset, stf=False, augment=False).items()
              if k not in ('lr_rampup_kimg', 'ema_halflife_kimg')}
    s = loop.setup(**config)
    assert (s.ema_halflife_kimg, s.ema_rampup_ratio, s.lr_rampup_kimg) == (500, 0.05, 10000)
    s.cur_nimg = 10 ** 8  # Past the ramps: beta = 0.5 ** (batch / 500k images), lr = base lr.
    with torch.no_grad():
        for p_ema, p_net in zip(s.ema.parameters(), s.net.parameters()):
            p_ema.fill_(0), p_net.fill_(1)
    loop.update_ema(s)
    assert float(next(s.ema.parameters()).flatten()[0]) == pytest.approx(1 - 0.5 ** (8 / 500000), rel=1e-3)


def test_nan_gradients_are_scrubbed(dataset):
    s = loop.setup(**_config(dataset, stf=False, augment=False, lr_rampup_kimg=0))
    s.loss_fn = lambda net, images, labels=None, augment_pipe=None: net(images, torch.ones([4])) * float('nan')
    loop.training_step(s)
    assert all(torch.isfinite(p).all() for p in s.net.parameters())
    assert all(torch.isfinite(p.grad).all() for p in s.net.parameters() if p.grad is not None)


@pytest.mark.parametrize('overrides, message', [
    (dict(rbatch=2), 'rbatch=2: expected an integer >= batch_gpu (4)'),
    (dict(rbatch=None), 'rbatch=None with a loss that has stf=True'),
    (dict(precond='bogus'), "precond='bogus': expected one of ['edm', 'vp', 've', 'ncsnv2']"),
])
def test_setup_errors(dataset, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        loop.setup(**_config(dataset, **overrides))


def test_conditional_stf_round_inputs_and_step(tmp_path):
    """A class-conditional run with STF and augmentation: labels reach the net and the class-masked target."""
    cond = make_zip(tmp_path / 'cond.zip', num=16, res=8, num_classes=2, seed=4)
    config = _config(cond)
    config['dataset_kwargs'] = dict(config['dataset_kwargs'], use_labels=True)
    s = loop.setup(**config)
    assert s.net.label_dim == 2 and s.ref_iter is not None
    images, labels, extras = loop._fetch(s)
    kwargs = loop._round_inputs(s, images, labels, extras, r=1)
    assert kwargs['reference'].shape == (12, 3, 8, 8) and kwargs['reference_labels'].shape == (12, 2)
    assert torch.equal(kwargs['reference'][:4], images[4:]) and torch.equal(kwargs['reference_labels'][:4], labels[4:])
    loop.training_step(s)
    assert s.cur_nimg == 8 and all(torch.isfinite(p).all() for p in s.net.parameters())


# Two processes (gloo).


def _worker(rank, port, dataset, out_dir):
    torch.set_num_threads(1)
    with distributed.process_group(rank, 2, init_method=f'tcp://127.0.0.1:{port}'):  # Left synchronised.
        _train_three_steps(rank, dataset, out_dir)


def _train_three_steps(rank, dataset, out_dir):
    training_stats.init_multiprocessing(rank, None)
    s = loop.setup(**_config(dataset, num_gpus=2, rank=rank, device='cpu'))
    first_images = loop._fetch(s)[0].sum().item()
    s.data_iter = loop.make_data_iterator(s.training_set, rank, 2, 0, 4, 0, {}, s.device)  # Rewind the fetch.
    for _ in range(3):
        loop.training_step(s)
    flat = {name: torch.cat([p.detach().flatten() for p in s[name].parameters()]) for name in ('net', 'ema')}
    torch.save(dict(flat=flat, first=first_images), os.path.join(out_dir, f'rank{rank}.pt'))


def test_two_process_gloo_keeps_replicas_identical(dataset, tmp_path):
    torch.multiprocessing.spawn(_worker, args=(free_port(), dataset, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{rank}.pt') for rank in (0, 1))
    assert r0['first'] != r1['first']  # Each rank trains on its own slice of the data...
    for name in ('net', 'ema'):
        assert torch.equal(r0['flat'][name], r1['flat'][name]), name  # ...yet the replicas stay identical.


PRE_LAYOUT = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'pre_layout', 'dpm-snapshot-edm-augment.pkl')


def test_snapshot_written_before_the_layout_move_still_loads_safe_and_trusted(tmp_path):
    # Written by the diffusion trainer when it still lived in edm_bridge/ (edm_bridge.dpm_augment.AugmentPipe).
    golden = torch.load(PRE_LAYOUT.replace('.pkl', '.golden.pt'), weights_only=True)
    D = loading.load_denoiser(PRE_LAYOUT)
    with torch.no_grad():
        torch.testing.assert_close(D(golden['x'], golden['sigma']), golden['denoised'], rtol=0, atol=0)
    # Trusted: a fresh process, so the pickled module sources are exec'd rather than matched to imported modules.
    script = ('import pickle, sys, torch\n'
              'data = pickle.load(open(sys.argv[1], "rb"))\n'
              'g = torch.load(sys.argv[2], weights_only=True)\n'
              'with torch.no_grad(): y = data["ema"](g["x"], g["sigma"])\n'
              'print(type(data["augment_pipe"]).__name__, float((y - g["denoised"]).abs().max()))\n')
    out = subprocess.run([sys.executable, '-c', script, PRE_LAYOUT, PRE_LAYOUT.replace('.pkl', '.golden.pt')],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['AugmentPipe', '0.0']

"""Tests for edm_bridge/loading.py: EDM pickles written by our persistent classes load safely (rebuilt from our code)
and trusted with outputs equal to the original net; ADM state dicts load with presets; describe; every error."""

import pickle
import re

import pytest
import torch

from edm_bridge import adm, edm_networks, loading, schedules
from edm_bridge.denoiser import Denoiser, FrozenDenoiser
from temp_modules import import_source
from torch_utils import safe_pickle
from torch_utils.finite import NonFiniteError

TINY = dict(img_resolution=8, img_channels=3, model_channels=16, channel_mult=[1, 2], num_blocks=1,
            attn_resolutions=[4], dropout=0.0)
NCSNPP = dict(embedding_type='fourier', encoder_type='residual', decoder_type='skip', resample_filter=[1, 3, 3, 1],
              channel_mult_noise=2)
CONFIGS = {  # name: (class, kwargs)
    'edm-songunet': (edm_networks.EDMPrecond, dict(TINY, label_dim=4, model_type='SongUNet')),
    'vp': (edm_networks.VPPrecond, dict(TINY)),
    've': (edm_networks.VEPrecond, dict(TINY, **NCSNPP)),
    'iddpm-dhariwal': (edm_networks.iDDPMPrecond, dict(TINY, label_dim=4, model_channels=32)),
}
ADM_TINY = dict(channels_scale=1 / 6, image_size=8)  # 'adm-imagenet64-cond' at 32 base channels, 8x8.


def randomize(net, seed):
    """Random weights everywhere (EDM initialises the last layers to zero, which would make D trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return net.eval().requires_grad_(False)


def write_edm_pickle(path, net, **extra):
    path.write_bytes(pickle.dumps(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={}, **extra)))
    return path


def inputs(label_dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([2, 3, 8, 8], generator=gen)
    labels = torch.eye(label_dim)[[1, label_dim - 1]] if label_dim else None
    return x, torch.tensor([0.05, 2.0]), labels


@pytest.mark.parametrize('config', list(CONFIGS))
def test_edm_pickle_loads_safe_and_trusted_with_equal_outputs(tmp_path, config):
    cls, kwargs = CONFIGS[config]
    torch.manual_seed(0)
    net = randomize(cls(**kwargs), seed=1)
    path = write_edm_pickle(tmp_path / f'{config}.pkl', net)
    x, sigma, labels = inputs(net.label_dim)
    expected = net(x, sigma, labels)
    safe = loading.load_denoiser(path)
    trusted = loading.load_denoiser(str(path), trusted=True)
    assert type(safe.net) is cls and isinstance(net, Denoiser)  # Rebuilt from our own class; EDM nets fit as is.
    for D in (safe, trusted):
        assert isinstance(D, FrozenDenoiser) and isinstance(D, Denoiser) and not D.training
        assert not any(p.requires_grad for p in D.parameters())
        assert (D.img_resolution, D.img_channels, D.label_dim) == (8, 3, net.label_dim)
        assert (D.sigma_min, D.sigma_max) == (float(net.sigma_min), float(net.sigma_max))
        assert torch.equal(D(x, sigma, labels), expected)
    assert not torch.equal(expected, x)


def test_describe_edm_pickle(tmp_path):
    cls, kwargs = CONFIGS['ve']
    net = cls(**kwargs)
    info = loading.describe(write_edm_pickle(tmp_path / 've.pkl', net))
    assert info == dict(format='edm-pickle', preconditioning='VEPrecond', backbone='SongUNet',
                        architecture=dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                                          dropout=0.0, **NCSNPP),
                        img_resolution=8, img_channels=3, label_dim=0,
                        num_params=sum(p.numel() for p in net.parameters()), sigma_min=0.02, sigma_max=100.0,
                        loss=None, schedule='karras', source=str(tmp_path / 've.pkl'), name=None, license=None,
                        nonfinite_tensors={})


@pytest.mark.parametrize('trusted', [False, True])
def test_nan_weights_are_refused_on_load_and_flagged_by_describe(tmp_path, trusted):
    cls, kwargs = CONFIGS['vp']
    net = randomize(cls(**kwargs), seed=2)
    name = next(name for name, _ in net.named_parameters() if name.endswith('weight'))
    with torch.no_grad():
        net.get_parameter(name).view(-1)[:3] = float('nan')
    path = write_edm_pickle(tmp_path / 'nan.pkl', net)
    with pytest.raises(NonFiniteError, match=re.escape(
            f'{path} holds non-finite weights (NaN/Inf; samples would be black); use an intact copy of the model: '
            f'denoiser.{name} holds 3 NaN/Inf value(s)')):
        loading.load_denoiser(path, trusted=trusted)
    assert loading.describe(path)['nonfinite_tensors'] == {name: 3}


def test_describe_runs_no_code_from_the_pickle(tmp_path, monkeypatch):
    def refuse(meta):
        raise AssertionError('describe must not rebuild objects from pickled source')
    path = write_edm_pickle(tmp_path / 'edm.pkl', CONFIGS['edm-songunet'][0](**CONFIGS['edm-songunet'][1]))
    monkeypatch.setattr('torch_utils.persistence._reconstruct_persistent_obj', refuse)
    with pytest.raises(AssertionError, match='describe must not'):  # The trap works for a normal unpickle.
        loading.load_denoiser(path, trusted=True)
    info = loading.describe(path)
    assert (info['preconditioning'], info['label_dim'], info['sigma_max']) == ('EDMPrecond', 4, float('inf'))


def tiny_adm(tmp_path, file_name='tiny_adm.pt'):
    unet = randomize(adm.build_adm('adm-imagenet64-cond', **ADM_TINY), seed=2)
    torch.save(unet.state_dict(), tmp_path / file_name)
    return unet, tmp_path / file_name


def test_adm_checkpoint_loads_with_preset_override(tmp_path):
    unet, path = tiny_adm(tmp_path)
    reference = adm.ADMDenoiser(unet, schedules.get_schedule('ddpm-cosine'), learn_sigma=True)
    D = loading.load_denoiser(path, adm_preset='adm-imagenet64-cond', adm_kwargs=ADM_TINY, device='cpu')
    assert type(D.net) is adm.ADMDenoiser and (D.img_resolution, D.label_dim) == (8, 1000)
    x, _, labels = inputs(1000)
    sigma = reference.sigma_grid[[100, 400]].to(torch.float32)
    torch.testing.assert_close(D(x, sigma, labels), reference(x, sigma, labels), rtol=0, atol=0)
    info = loading.describe(path, adm_preset='adm-imagenet64-cond', adm_kwargs=ADM_TINY)
    assert {k: info[k] for k in ('format', 'backbone', 'img_resolution', 'img_channels', 'label_dim', 'num_params',
                                 'adm_preset', 'schedule')} == dict(
        format='adm-checkpoint', backbone='ADMUNet', img_resolution=8, img_channels=3, label_dim=1000,
        num_params=sum(p.numel() for p in unet.parameters()), adm_preset='adm-imagenet64-cond', schedule='ddpm-cosine')
    assert (info['sigma_min'], info['sigma_max']) == (reference.sigma_min, reference.sigma_max)


def test_adm_checkpoint_named_like_a_release_finds_its_preset(tmp_path):
    _, path = tiny_adm(tmp_path, file_name='64x64_diffusion.pt')  # A manual download of adm-imagenet64-cond.
    info = loading.describe(path, adm_kwargs=ADM_TINY)
    assert (info['name'], info['adm_preset'], info['license']) == ('adm-imagenet64-cond', 'adm-imagenet64-cond', 'MIT')


def test_adm_errors(tmp_path):
    _, path = tiny_adm(tmp_path)
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is an ADM checkpoint (a plain state dict, which does not record its architecture): pass "
            f"adm_preset (CLI: --adm-preset), one of {list(adm.ADM_PRESETS)}")):
        loading.load_denoiser(path)
    with pytest.raises(ValueError, match=re.escape("preset='adm-cifar': expected one of")):
        loading.load_denoiser(path, adm_preset='adm-cifar')
    with pytest.raises(ValueError, match=re.escape("the stored tensors do not match ADM preset 'adm-lsun-bedroom256' "
                                                   "with {'channels_scale': 0.125} (missing [")) as err:
        loading.load_denoiser(path, adm_preset='adm-lsun-bedroom256', adm_kwargs=dict(channels_scale=0.125))
    assert "pass the adm_preset that tiny_adm.pt was trained with" in str(err.value)
    torch.save([torch.zeros(2)], tmp_path / 'list.pt')
    with pytest.raises(ValueError, match=re.escape("list.pt holds a list of 1 items (['Tensor']), not a state dict of "
                                                   "tensors nor an NCSNv2 checkpoint list; expected an EDM network "
                                                   "pickle, an ADM (guided-diffusion) checkpoint")):
        loading.load_denoiser(tmp_path / 'list.pt', adm_preset='adm-imagenet64-cond')


def test_torch_save_files_are_named_for_what_they_are(tmp_path):
    """Before: any torch.save file was called 'an ADM checkpoint' and asked for --adm-preset."""
    torch.save({'conv.weight': torch.zeros(2), 'conv.bias': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match=re.escape(
            "other.pt is a torch.save state dict of 2 tensors (e.g. ['conv.bias', 'conv.weight']) without the "
            "input_blocks.* / time_embed.* tensors of an ADM (guided-diffusion) checkpoint, nor an NCSNv2 "
            "checkpoint.pth list")):
        loading.load_denoiser(tmp_path / 'other.pt')
    state = dict(net={}, ema={'w': torch.zeros(1)}, optimizer={}, cur_nimg=16, batch_idx=2, version=1)
    torch.save(state, tmp_path / 'training-state-000000.pt')
    for call in (loading.load_denoiser, loading.describe):
        with pytest.raises(ValueError, match=re.escape(
                'training-state-000000.pt is a train_dpm.py training state (training-state-*.pt: net, ema, optimizer, '
                'counters), not a network file; pass the network-snapshot-*.pkl of the same tick')):
            call(tmp_path / 'training-state-000000.pt')


def test_unknown_global_gives_the_safe_loaders_error(tmp_path):
    import datetime
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps(dict(ema=datetime.date(2020, 1, 1))))
    with pytest.raises(safe_pickle.UnsafePickleError, match=re.escape("safe_load refused the global "
                                                                      "'datetime.date'")):
        loading.load_denoiser(path)
    with pytest.raises(safe_pickle.UnsafePickleError):
        loading.describe(path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: 'ema' is a date; expected a network (torch.nn.Module)")):
        loading.load_denoiser(path, trusted=True)


def test_mismatched_tensors_suggest_trusted(tmp_path):
    cls, kwargs = CONFIGS['vp']
    net = randomize(cls(**kwargs), seed=3)
    net.extra = torch.nn.Parameter(torch.zeros(3), requires_grad=False)  # Not built by our class from the kwargs.
    path = write_edm_pickle(tmp_path / 'extra.pkl', net)
    with pytest.raises(ValueError, match=re.escape(
            "the stored tensors do not match edm_bridge.edm_networks.VPPrecond built from its recorded arguments "
            "(missing [], unexpected ['extra'], wrong shape []); if the pickle was written by other code, load it "
            "with trusted=True, which runs the code stored in it (only for files you trust)")):
        loading.load_denoiser(path)
    x, sigma, _ = inputs(0)
    assert torch.equal(loading.load_denoiser(path, trusted=True)(x, sigma), net(x, sigma))


def test_unknown_persistent_class_suggests_trusted(tmp_path):
    module = import_source(tmp_path, 'import torch\nfrom torch_utils import persistence\n\n\n'
                           '@persistence.persistent_class\nclass MyPrecond(torch.nn.Module):\n    pass\n', 'myprecond')
    path = write_edm_pickle(tmp_path / 'mine.pkl', module.MyPrecond())
    with pytest.raises(ValueError, match=re.escape(f"'ema' holds a 'MyPrecond'; the safe loader rebuilds only "
                                                   f"{list(loading.EDM_CLASSES)}; if the pickle was written by other "
                                                   "code, load it with trusted=True")):
        loading.load_denoiser(path)


def test_file_errors(tmp_path):
    (tmp_path / 'snapshot.pkl').write_bytes(pickle.dumps(dict(G=1, D=2)))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'snapshot.pkl'} holds a dict with keys ['D', 'G'] "
                                                   "and no 'ema'; expected an EDM network pickle")):
        loading.load_denoiser(tmp_path / 'snapshot.pkl')
    (tmp_path / 'text.pkl').write_bytes(b'hello')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'text.pkl'} is neither a pickle nor a torch.save "
                                                   "checkpoint (starts with b'hell')")):
        loading.describe(tmp_path / 'text.pkl')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        loading.load_denoiser(tmp_path / 'missing.pkl')
    with pytest.raises(TypeError, match=re.escape("trusted is str 'yes'; expected True or False")):
        loading.load_denoiser(tmp_path / 'text.pkl', trusted='yes')
    with pytest.raises(ValueError, match=re.escape("adm_kwargs is {'scale': 0.5}; expected None or a dict with some "
                                                   "of ['channels_scale', 'image_size']")):
        loading.describe(tmp_path / 'text.pkl', adm_kwargs={'scale': 0.5})

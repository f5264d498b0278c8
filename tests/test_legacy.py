"""legacy.py: the released `legacy.load_network_pkl(f)` entry point, safe by default."""

import io
import os
import pickle
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import legacy  # noqa: E402  (a top-level module, importable from the repository root)
import dnnlib  # noqa: E402
from torch_utils import safe_pickle  # noqa: E402
from training import networks, snapshot  # noqa: E402

G_KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=16))
D_KWARGS = dict(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=16)


@pytest.fixture(scope='module')
def pkl(tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G, D, G_ema = networks.Generator(**G_KWARGS), networks.Discriminator(**D_KWARGS), networks.Generator(**G_KWARGS)
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    snapshot.save_network_pkl(path, dict(G=G, D=D, G_ema=G_ema))  # No training_set_kwargs, no augment_pipe.
    return str(path)


def _images(G):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1))
    return G(z, torch.zeros([2, 0]), noise_mode='const')


def test_released_call_pattern_gives_the_released_layout(pkl):
    with dnnlib.util.open_url(pkl) as f:
        data = legacy.load_network_pkl(f)
    assert {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'} <= set(data)
    assert data['training_set_kwargs'] is None and data['augment_pipe'] is None
    assert isinstance(data['G_ema'], networks.Generator) and isinstance(data['D'], networks.Discriminator)
    assert _images(data['G_ema']).shape == (2, 3, 8, 8)


def test_safe_by_default_trusted_on_request(pkl, tmp_path, monkeypatch):
    evil = tmp_path / 'evil.pkl'
    evil.write_bytes(pickle.dumps(dict(G_ema=os.getcwd)))  # A global outside the allow-list.
    with pytest.raises(safe_pickle.UnsafePickleError):
        legacy.load_network_pkl(str(evil))
    monkeypatch.setenv(legacy.TRUST_ENV, '1')
    with pytest.raises(ValueError, match='G_ema: expected a network, got builtin_function_or_method'):
        legacy.load_network_pkl(str(evil))  # Unpickled (trusted), then refused as not a network.
    monkeypatch.setenv(legacy.TRUST_ENV, 'maybe')
    with pytest.raises(ValueError, match=r"\$SMART_TRUST_PICKLES='maybe'"):
        legacy.load_network_pkl(pkl)
    monkeypatch.delenv(legacy.TRUST_ENV)
    safe, trusted = legacy.load_network_pkl(pkl), legacy.load_network_pkl(pkl, trusted=True)
    assert torch.equal(_images(safe['G_ema']), _images(trusted['G_ema'].eval()))  # Pickled in train mode.


def test_force_fp16_rebuilds_with_the_released_settings(pkl):
    plain = legacy.load_network_pkl(pkl)
    fp16 = legacy.load_network_pkl(io.BytesIO(open(pkl, 'rb').read()), force_fp16=True)
    for key in ('G', 'G_ema'):
        assert fp16[key].init_kwargs.synthesis_kwargs.num_fp16_res == 4
        assert fp16[key].init_kwargs.synthesis_kwargs.conv_clamp == 256
        assert plain[key].init_kwargs.synthesis_kwargs.get('num_fp16_res', 0) == 0
    assert fp16['D'].init_kwargs.num_fp16_res == 4 and fp16['D'].init_kwargs.conv_clamp == 256
    for name, tensor in plain['G_ema'].state_dict().items():
        assert torch.equal(fp16['G_ema'].state_dict()[name], tensor), name
    assert torch.allclose(_images(fp16['G_ema']), _images(plain['G_ema']), atol=1e-5)  # fp16 is CUDA-only.
    again = legacy.load_network_pkl(pkl, force_fp16=True)
    assert legacy._with_fp16('G_ema', again['G_ema']) is again['G_ema']  # Already fp16: kept as is.

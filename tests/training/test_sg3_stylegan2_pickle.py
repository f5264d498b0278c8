"""StyleGAN2 networks pickled by the StyleGAN3 codebase (training.networks_stylegan2) load safely into our classes.

shared/fixtures/sg3-stylegan2 records such a snapshot (class names, init args / kwargs, tensor names and shapes) and
the released code's fp32 outputs for fixed latents. The test writes a persistence-format pickle with exactly those
records and tensors (the stored module source is a stand-in that raises if it is ever executed), loads it with the
safe loader, and compares images (truncation 1 and 0.7, noise 'const') and D logits with golden.pt to 1e-5.
StyleGAN3's alias-free generators (-t / -r) stay refused with an error that names them and --trust-pickle.
"""

import io
import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

import dnnlib
from shared_fixtures import fixture_dir
from torch_utils import persistence
from training import discriminator, networks, pickle_codebases, snapshot

STAND_IN_SOURCE = ('raise RuntimeError("stand-in for training/networks_stylegan2.py of the StyleGAN3 codebase; '
                   'the safe loader must never execute it")\n')
BUFFERS = ('resample_filter', 'noise_const', 'w_avg')  # Leaf names registered as buffers in StyleGAN2 networks.
TOL = 1e-5


class _Persistent:
    """Pickles as torch_utils.persistence._reconstruct_persistent_obj(meta), like a persistent_class instance."""

    def __init__(self, class_name: str, state: dict):
        self.meta = dict(type='class', version=6, module_src=STAND_IN_SOURCE, class_name=class_name, state=state)

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


def _easydict(value):
    if isinstance(value, dict):
        return dnnlib.EasyDict({k: _easydict(v) for k, v in value.items()})
    return value


def _module_state(tensors: dict, prefix: str = '') -> dict:
    """An nn.Module __dict__ (parameters, buffers, submodules as persistent objects) holding `tensors` below prefix."""
    params, buffers, children = {}, {}, {}
    for name, tensor in tensors.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if '.' in rest:
            children.setdefault(rest.split('.', 1)[0], None)
        elif rest in BUFFERS:
            buffers[rest] = tensor
        else:
            params[rest] = torch.nn.Parameter(tensor, requires_grad=False)
    modules = {child: _Persistent('Submodule', _module_state(tensors, f'{prefix}{child}.')) for child in children}
    return dict(training=False, _parameters=params, _buffers=buffers, _modules=modules)


def write_snapshot(record: dict, tensors: dict, keys=('G', 'D', 'G_ema')) -> bytes:
    """A persistence-format snapshot pickle with the recorded class names, init args / kwargs and tensors."""
    snap = {}
    for key in keys:
        rec = record[key]
        own = {name[len(f'{key}.'):]: t for name, t in tensors.items() if name.startswith(f'{key}.')}
        if key == 'G':  # golden.pt stores G_ema's tensors only; G has the same names and shapes.
            own = {name[len('G_ema.'):]: t for name, t in tensors.items() if name.startswith('G_ema.')}
        assert [[n, list(t.shape)] for n, t in own.items()] == rec['tensors'], key
        state = _module_state(own)
        state.update(_init_args=tuple(rec['init_args']), _init_kwargs=_easydict(rec['init_kwargs']))
        snap[key] = _Persistent(rec['class_name'], state)
    snap.update(augment_pipe=None, training_set_kwargs=None)
    return pickle.dumps(snap)


@pytest.fixture(scope='module')
def fixture():
    root = fixture_dir('sg3-stylegan2')
    with open(os.path.join(root, 'snapshot_record.json')) as f:
        record = json.load(f)
    golden = torch.load(os.path.join(root, 'golden.pt'), weights_only=True)
    return record, golden


def test_records_are_the_stylegan3_codebase(fixture):
    record, _ = fixture
    assert {key: (rec['class_name'], rec['source_module']) for key, rec in record.items()} == {
        'G': ('Generator', 'training.networks_stylegan2'), 'D': ('Discriminator', 'training.networks_stylegan2'),
        'G_ema': ('Generator', 'training.networks_stylegan2')}
    assert 'synthesis_kwargs' not in record['G']['init_kwargs'] and 'channel_base' in record['G']['init_kwargs']


def test_sg3_stylegan2_snapshot_loads_safely_and_matches_the_release(fixture):
    record, golden = fixture
    data = write_snapshot(record, golden['tensors'])
    snap = snapshot.load_network_pkl(io.BytesIO(data))  # Safe: the stand-in source would raise if it ran.
    G, D, G_ema = snap['G'], snap['D'], snap['G_ema']
    assert type(G) is type(G_ema) is networks.Generator and type(D) is discriminator.Discriminator
    syn = G_ema.synthesis.b32
    assert (syn.conv1.conv_clamp, syn.use_fp16, syn.fused_modconv_default) == (256, True, 'inference_only')
    assert (D.b32.conv0.conv_clamp, D.b32.use_fp16) == (256, True)  # StyleGAN3's defaults, not StyleGAN2-ADA's.
    assert G_ema.mapping.w_avg_beta == 0.998
    z, c = golden['z'], golden['c']
    with torch.no_grad():
        for psi, key in ((1, 'img_psi1'), (0.7, 'img_psi07')):
            img = G_ema(z, c, truncation_psi=psi, noise_mode='const')
            err = float((img - golden[key]).abs().max())
            print(f'{key}: max |d| {err:.3g}')
            assert err <= TOL
        logits = D(golden['img_psi1'], c)
    err = float((logits - golden['D_logits']).abs().max())
    print(f'D_logits: max |d| {err:.3g}')
    assert logits.shape == (4, 1) and err <= TOL
    assert torch.equal(G.synthesis.b4.const, G_ema.synthesis.b4.const)


def test_generate_cli_renders_it_without_trust(fixture, tmp_path):
    import generate  # A top-level script, importable from the repository root.
    record, golden = fixture
    (tmp_path / 'sg3-stylegan2.pkl').write_bytes(write_snapshot(record, golden['tensors'], keys=('G_ema',)))
    result = CliRunner().invoke(generate.main, ['--network', str(tmp_path / 'sg3-stylegan2.pkl'), '--seeds', '0',
                                                '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path / 'out') == ['seed0000.png']


@pytest.mark.parametrize('extra_kwargs, evidence', [
    (dict(magnitude_ema_beta=0.999), "['magnitude_ema_beta']"),                                    # stylegan3-t
    (dict(magnitude_ema_beta=0.999, conv_kernel=1, use_radial_filters=True),
     "['magnitude_ema_beta', 'conv_kernel', 'use_radial_filters']"),                              # stylegan3-r
])
def test_alias_free_generators_need_trust_pickle(fixture, tmp_path, extra_kwargs, evidence):
    record, golden = fixture
    record = json.loads(json.dumps(record))
    for key in ('G', 'G_ema'):
        record[key]['init_kwargs'].update(extra_kwargs)
    data = write_snapshot(record, golden['tensors'])
    message = (f"G: the snapshot's Generator is StyleGAN3's alias-free generator (training.networks_stylegan3, "
               f"--cfg=stylegan3-t or stylegan3-r; recorded {evidence}), which the safe loader cannot rebuild: our "
               f"classes implement StyleGAN2 only; load it with --trust-pickle (trusted=True), which runs the code "
               f"stored in the pickle (only for files you trust)")
    with pytest.raises(ValueError) as err:
        snapshot.load_network_pkl(io.BytesIO(data))
    assert str(err.value) == message
    import generate
    (tmp_path / 'sg3-t.pkl').write_bytes(data)
    result = CliRunner().invoke(generate.main, ['--network', str(tmp_path / 'sg3-t.pkl'), '--seeds', '0',
                                                '--outdir', str(tmp_path / 'out')])
    assert result.exit_code != 0 and "alias-free generator" in result.output and '--trust-pickle' in result.output


def test_codebase_detection():
    from torch_utils.safe_pickle import PersistentRecord
    def rec(kwargs, names=()):
        return PersistentRecord('Generator', None, (), kwargs, {name: torch.zeros(1) for name in names})
    base = dict(z_dim=1, c_dim=0, w_dim=1, img_resolution=8, img_channels=3, mapping_kwargs={})
    assert pickle_codebases.generator_codebase(rec(dict(base, synthesis_kwargs={}))) == pickle_codebases.SG2ADA
    assert pickle_codebases.generator_codebase(rec(base)) == pickle_codebases.SG2ADA  # No synthesis options at all.
    assert pickle_codebases.generator_codebase(rec(dict(base, channel_base=64))) == pickle_codebases.SG3_STYLEGAN2
    assert pickle_codebases.generator_codebase(rec(base, ['synthesis.input.freqs'])) == pickle_codebases.SG3_ALIAS_FREE
    args, kwargs = pickle_codebases.our_arguments('G', rec(dict(base, channel_base=64, conv_clamp=None)),
                                                  pickle_codebases.SG3_STYLEGAN2)
    assert args == () and kwargs['synthesis_kwargs'] == dict(num_fp16_res=4, conv_clamp=None,
                                                            fused_modconv_default=True, channel_base=64)
    with pytest.raises(ValueError, match=r"mapping_kwargs\.freeze_layers is 2; our MappingNetwork supports only "
                                         r"freeze_layers=0; load it with --trust-pickle"):
        pickle_codebases.our_arguments('G', rec(dict(base, channel_base=64, mapping_kwargs=dict(freeze_layers=2))),
                                       pickle_codebases.SG3_STYLEGAN2)

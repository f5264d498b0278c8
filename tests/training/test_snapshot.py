"""training.snapshot: safe and trusted loading of snapshot pickles, and atomic saving."""

import copy
import io
import os
import pickle

import pytest
import torch

from torch_utils import safe_pickle
from training import networks, snapshot

G_KWARGS = dict(z_dim=8, c_dim=4, w_dim=8, img_resolution=8, img_channels=3,
                mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=16))
D_KWARGS = dict(c_dim=4, img_resolution=8, img_channels=3, channel_base=64, channel_max=16,
                epilogue_kwargs=dict(mbstd_group_size=3))


def make_snapshot(seed=0):
    with torch.random.fork_rng():  # Network init draws from the global RNG; keep other tests' streams untouched.
        torch.manual_seed(seed)
        G = networks.Generator(**G_KWARGS)
        D = networks.Discriminator(**D_KWARGS)
    with torch.no_grad():  # Non-zero noise strengths and w_avg, so that those tensors matter for the images.
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.3)
        G.mapping.w_avg.normal_()
    G_ema = copy.deepcopy(G)
    for net in (G, D, G_ema):
        net.eval().requires_grad_(False)
    return dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x.zip"))


def _images(G, seed=1, noise_mode="const"):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([3, G.z_dim], generator=gen)
    c = torch.eye(G.c_dim)[:3]
    return G(z, c, truncation_psi=0.7, noise_mode=noise_mode)


@pytest.fixture(scope="module")
def snap_bytes():
    snap = make_snapshot()
    return snap, pickle.dumps(snap)


def test_safe_and_trusted_give_identical_images(snap_bytes):
    snap, data = snap_bytes
    safe = snapshot.load_network_pkl(io.BytesIO(data))
    trusted = snapshot.load_network_pkl(io.BytesIO(data), trusted=True)
    expected = _images(snap["G_ema"])
    assert torch.equal(_images(safe["G_ema"]), expected)
    assert torch.equal(_images(trusted["G_ema"]), expected)
    img = _images(snap["G"])
    c = torch.eye(4)[:3]
    assert torch.equal(safe["D"](img, c), snap["D"](img, c))
    assert type(safe["G_ema"]) is networks.Generator  # rebuilt from our class, not from the pickled source
    assert safe["training_set_kwargs"] == snap["training_set_kwargs"] and safe["augment_pipe"] is None
    for key in snapshot.NETWORK_KEYS:
        assert not safe[key].training and not any(p.requires_grad for p in safe[key].parameters())


def test_path_input_and_missing_keys_filled(tmp_path, snap_bytes):
    snap, _ = snap_bytes
    path = tmp_path / "snap.pkl"
    snapshot.save_network_pkl(path, dict(G_ema=snap["G_ema"]))
    assert os.listdir(tmp_path) == ["snap.pkl"]
    loaded = snapshot.load_network_pkl(str(path))
    assert loaded["G"] is None and loaded["D"] is None and loaded["training_set_kwargs"] is None
    assert torch.equal(_images(loaded["G_ema"]), _images(snap["G_ema"]))


def _record(snap, **changes):
    record = next(r for p, r in safe_pickle.iter_records(safe_pickle.safe_load(io.BytesIO(pickle.dumps(snap))))
                  if p == "G_ema")
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_unknown_class_points_to_trust_pickle(snap_bytes):
    record = _record(dict(G_ema=snap_bytes[0]["G_ema"]), class_name="SynthesisNetworkSG3")
    with pytest.raises(ValueError, match=r"G_ema: the snapshot holds a 'SynthesisNetworkSG3'.*--trust-pickle"):
        snapshot.build_from_record("G_ema", record)


def test_foreign_kwargs_point_to_trust_pickle(snap_bytes):
    record = _record(dict(G_ema=snap_bytes[0]["G_ema"]))
    record.init_kwargs = dict(record.init_kwargs, bogus_option=0.999)
    with pytest.raises(ValueError, match=r"G_ema: the recorded constructor arguments of Generator \(stylegan2-ada\) do "
                                         r"not fit "
                                         r"training\.networks\.Generator .*--trust-pickle"):
        snapshot.build_from_record("G_ema", record)


def test_tensor_mismatch_is_reported(snap_bytes):
    record = _record(dict(G_ema=snap_bytes[0]["G_ema"]))
    record.state_dict = {k: v for k, v in record.state_dict.items() if k != "mapping.w_avg"}
    with pytest.raises(ValueError, match=r"missing \['mapping\.w_avg'\]"):
        snapshot.build_from_record("G_ema", record)


def test_not_a_snapshot(tmp_path):
    with pytest.raises(ValueError, match="the pickle holds list without any of the keys"):
        snapshot.load_network_pkl(io.BytesIO(pickle.dumps([1, 2])))
    with pytest.raises(TypeError, match="snapshot must be a dict"):
        snapshot.save_network_pkl(tmp_path / "x.pkl", [1])


def test_safe_path_runs_nothing(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked > " + str(tmp_path / "hacked"),))

    with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
        snapshot.load_network_pkl(io.BytesIO(pickle.dumps(dict(G_ema=Evil()))))
    assert not (tmp_path / "hacked").exists()


def test_augment_pipe_is_rebuilt(snap_bytes):
    from training.augment import AugmentPipe, augpipe_specs
    pipe = AugmentPipe(**augpipe_specs["bgc"])
    pipe.p.fill_(0.25)
    data = pickle.dumps(dict(G_ema=snap_bytes[0]["G_ema"], augment_pipe=pipe))
    loaded = snapshot.load_network_pkl(io.BytesIO(data))
    assert type(loaded["augment_pipe"]) is AugmentPipe and float(loaded["augment_pipe"].p) == 0.25


def test_unbuildable_augment_pipe_stays_a_record(snap_bytes, monkeypatch):
    record = _record(dict(G_ema=snap_bytes[0]["G_ema"]), class_name="FancyAugment")
    real_safe_load = safe_pickle.safe_load

    def safe_load_with_foreign_pipe(f):
        data = real_safe_load(f)
        data["augment_pipe"] = record
        return data

    monkeypatch.setattr(safe_pickle, "safe_load", safe_load_with_foreign_pipe)
    with pytest.warns(UserWarning, match="augment_pipe kept as a PersistentRecord: augment_pipe: the snapshot holds"):
        loaded = snapshot.load_network_pkl(io.BytesIO(pickle.dumps(dict(G_ema=snap_bytes[0]["G_ema"]))))
    assert loaded["augment_pipe"] is record and isinstance(loaded["G_ema"], networks.Generator)


@pytest.mark.parametrize("trust_flag, hint", [
    ("--trusted", "load it with --trusted, which runs the code stored in it"),
    (None, "it can only be loaded by running its code, which this tool never does"),
])
def test_hint_names_the_callers_flag(snap_bytes, trust_flag, hint):
    """Before: the hint named --trust-pickle also in tools whose flag is --trusted or that have none (--resume)."""
    record = _record(dict(G_ema=snap_bytes[0]["G_ema"]), class_name="SynthesisNetworkSG3")
    with pytest.raises(ValueError) as info:
        snapshot.build_from_record("G_ema", record, trust_flag=trust_flag)
    assert str(info.value).endswith(hint) and "--trust-pickle" not in str(info.value)

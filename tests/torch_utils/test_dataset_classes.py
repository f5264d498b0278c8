"""torch_utils.dataset_classes: dataset kwargs read from a file name only known classes, keys and plain values; nothing
they name is imported or called unless trusted."""

import os
import sys

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import calc_metrics  # noqa: E402  (a top-level script, importable from the repository root)
import tiny_metrics  # noqa: E402
from dataset_io.reader import ImageFolderDataset  # noqa: E402
from metrics import metric_utils  # noqa: E402
from tiny_datasets import make_zip  # noqa: E402
from torch_utils import dataset_classes  # noqa: E402
from torch_utils.dataset_classes import UntrustedDatasetError, check_dataset_kwargs, open_dataset  # noqa: E402
from training import snapshot  # noqa: E402

CLS = 'training.dataset.ImageFolderDataset'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp('registry') / 'ds.zip', num=6, res=8, seed=3)


def test_known_class_builds_the_same_dataset(data):
    built = open_dataset(dict(class_name=CLS, path=data, resolution=8, max_size=4, use_labels=False, xflip=True,
                              random_seed=2))
    reference = ImageFolderDataset(path=data, resolution=8, max_size=4, use_labels=False, xflip=True, random_seed=2)
    assert type(built) is ImageFolderDataset
    assert len(built) == len(reference) == 8
    assert (built[5][0] == reference[5][0]).all()


@pytest.mark.parametrize('kwargs, message', [
    (dict(class_name='logging.basicConfig', filename='x'),
     r"names the dataset class 'logging\.basicConfig', which is not one of "
     r"\['training\.dataset\.ImageFolderDataset'\]"),
    (dict(class_name='torch.hub.load', repo_or_dir='.', model='m', source='local'), r"'torch\.hub\.load'"),
    (dict(class_name=None, path='x'), r"names the dataset class None"),
    (dict(class_name=CLS, path='x', cache=True), r"unknown key\(s\) \['cache'\] for training\.dataset\."),
    (dict(class_name=CLS, path=3), r"path is int 3; expected str or PathLike"),
    (dict(class_name=CLS, path='x', resolution=True), r"resolution is bool True; expected Integral or NoneType"),
    (dict(class_name=CLS, path='x', xflip='yes'), r"xflip is str 'yes'; expected bool"),
    (['not', 'a', 'dict'], r"dataset_kwargs is a list; expected a dict"),
])
def test_refused_kwargs(kwargs, message):
    with pytest.raises(UntrustedDatasetError, match=message):
        open_dataset(kwargs)


def test_refused_names_are_never_imported():
    assert 'antigravity' not in sys.modules
    with pytest.raises(UntrustedDatasetError, match='--trust-me'):
        check_dataset_kwargs(dict(class_name='antigravity.geohash', path='x'), trust_flag='--trust-me')
    assert 'antigravity' not in sys.modules


def test_trusted_builds_any_class_by_name(tmp_path, data):
    marker = tmp_path / 'marker.txt'
    open_dataset(dict(class_name='pathlib.Path.touch', self=str(marker)), trusted=True)  # The released behaviour.
    assert marker.is_file()
    assert len(open_dataset(dict(class_name=CLS, path=data), trusted=True)) == 6


def test_metric_options_refuse_unless_trust_dataset(tmp_path):
    marker = tmp_path / 'marker.txt'
    kwargs = dict(class_name='pathlib.Path.touch', self=str(marker))
    with pytest.raises(UntrustedDatasetError, match=r"'pathlib\.Path\.touch'.*pass --trusted only if you trust"):
        metric_utils.open_dataset(metric_utils.MetricOptions(dataset_kwargs=kwargs))
    assert not marker.exists()
    metric_utils.open_dataset(metric_utils.MetricOptions(dataset_kwargs=kwargs, trust_dataset=True))
    assert marker.is_file()


@pytest.mark.parametrize('kwargs', [dict(class_name='logging.basicConfig', filemode='w'),
                                    dict(class_name='pathlib.Path.touch')])
def test_calc_metrics_never_calls_what_the_snapshot_names(tmp_path, kwargs):
    marker = tmp_path / 'marker.txt'
    marker_key = 'filename' if kwargs['class_name'].startswith('logging') else 'self'
    pkl = tmp_path / 'evil.pkl'
    snapshot.save_network_pkl(pkl, dict(G_ema=tiny_metrics.make_generator(),
                                        training_set_kwargs={**kwargs, marker_key: str(marker)}))
    result = CliRunner().invoke(calc_metrics.main, ['--network', str(pkl), '--metrics', 'fid2k_full', '--quiet'])
    assert result.exit_code == 1
    assert result.output.count('\n') == 1 and 'Traceback' not in result.output
    assert result.output.startswith(f"Error: --network: the snapshot's training_set_kwargs names the dataset class "
                                    f"'{kwargs['class_name']}'")
    assert not marker.exists()
    assert dataset_classes.DATASET_CLASSES == (CLS,)
    assert not os.path.exists(os.path.join(os.getcwd(), 'marker.txt'))

"""Evaluate metrics (FID, KID, precision/recall, PPL, IS) of a network snapshot, in StyleGAN2-ADA's format.

Each result is printed as one JSON line and, when the snapshot sits in a run directory (next to
training_options.json), appended to <run_dir>/metric-<name>.jsonl. Detectors: see metrics/detectors.py
(--detector, --detector-vgg16, $SMART_DETECTOR_DIR or the download cache; offline without them it stops at once).
Examples:

\b
  # FID against the training data recorded in the snapshot.
  python calc_metrics.py --network=runs/00000-ds-auto1/network-snapshot-000200.pkl --metrics=fid50k_full
  # Several metrics, another dataset copy, local detector files.
  python calc_metrics.py --network=net.pkl --data=~/datasets/ffhq-256x256.zip --mirror \\
      --metrics=fid50k_full,kid50k_full,pr50k3_full --detector=inception-2015-12-05.pt --detector-vgg16=vgg16.pt
  # FID against precomputed reference statistics (EDM fid-refs .npz, see fid.py ref); quick smoke check.
  python calc_metrics.py --network=net.pkl --metrics=fid2k_full --ref=cifar10-32x32.npz
  # Two processes (GPUs, or CPU processes with gloo) started by torchrun.
  torchrun --standalone --nproc_per_node=2 calc_metrics.py --network=net.pkl --gpus=2

Valid metrics: fid50k_full, kid50k_full, pr50k3_full, is50k, ppl2_wend, fid50k, kid50k, pr50k3, the legacy path
lengths ppl_zfull, ppl_wfull, ppl_zend, ppl_wend (face crop), and the quick variants fid2k_full, kid2k_full,
pr2k3_full, is2k, ppl2_wend_2k (2k generated images: smoke checks only, not comparable with papers).
"""

from torch_utils import cpu_threads  # First: OpenMP's wait policy must be set before torch loads (see there).

import json
import os
import pickle

import click
import torch

import dnnlib
from metrics import detectors, frechet_inception_distance, metric_main
from torch_utils import dataset_classes, distributed
from training import snapshot


def _flag_error(flag: str, message: str) -> click.ClickException:
    return click.ClickException(f'{flag}: {message}')


def _check_source(flag: str, source: str | None) -> None:
    if source is not None and not dnnlib.util.is_url(source, allow_file_urls=True) and not os.path.isfile(source):
        raise _flag_error(flag, f'{source!r} is neither an existing file nor a URL')


def resolve_dataset_kwargs(data: str | None, mirror: bool | None, pkl_data: dict, G, trusted: bool = False) -> dict:
    """Dataset kwargs: --data, else the snapshot's training_set_kwargs (known dataset classes and keys only, unless
    `trusted`: torch_utils.dataset_classes); resolution and labels follow G (docs/spec/stylegan2-ada.md section 7)."""
    if data is not None:
        kwargs = dict(class_name=dataset_classes.IMAGE_FOLDER_DATASET, path=data)
    elif pkl_data.get('training_set_kwargs'):
        kwargs = dict(pkl_data['training_set_kwargs'])
        if not trusted:
            try:
                dataset_classes.check_dataset_kwargs(kwargs, "the snapshot's training_set_kwargs", '--trusted')
            except dataset_classes.UntrustedDatasetError as err:
                raise _flag_error('--network', f'{err}; or pass the dataset with --data') from None
    else:
        raise _flag_error('--data', 'the snapshot records no training_set_kwargs; pass the dataset with --data')
    kwargs.update(resolution=G.img_resolution, use_labels=G.c_dim != 0)
    if mirror is not None:
        kwargs['xflip'] = mirror
    try:
        dataset = dataset_classes.open_dataset(kwargs, trusted=trusted)
        label_dim = dataset.label_dim
        dataset.close()
    except (OSError, ValueError, TypeError) as err:
        path = str(kwargs.get('path'))
        raise _flag_error('--data', str(err) if path in str(err) else f'{path}: {err}') from None
    if G.c_dim != 0 and label_dim != G.c_dim:
        raise _flag_error('--data', f'{kwargs.get("path")} has labels of dim {label_dim}, but the network is '
                                    f'conditional with c_dim={G.c_dim}; pass a dataset with matching labels')
    return kwargs


def _run_dir(network: str) -> str | None:
    """The run directory of a snapshot: its folder when training_options.json lies there."""
    folder = os.path.dirname(os.path.abspath(network))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def evaluate(network: str, metrics: list[str], metric_kwargs: dict, data: str | None, mirror: bool | None,
             trusted: bool, rank: int) -> list[dnnlib.EasyDict]:
    """Load the snapshot, compute each metric on all ranks and report it on rank 0; return the results."""
    try:
        pkl_data = snapshot.load_network_pkl(network, trusted=trusted, trust_flag='--trusted')
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise _flag_error('--network', f'{network}: {err}') from None
    if pkl_data['G_ema'] is None:
        raise _flag_error('--network', f'{network}: the snapshot has no G_ema')
    G = pkl_data['G_ema']
    dataset_kwargs = resolve_dataset_kwargs(data, mirror, pkl_data, G, trusted)
    run_dir = _run_dir(network) if os.path.isfile(network) else None
    if rank == 0 and metric_kwargs.get('progress'):
        print(f'Dataset: {json.dumps(dataset_kwargs)}')
    results = []
    for metric in metrics:
        try:
            result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=dataset_kwargs, rank=rank,
                                             trust_dataset=trusted, **metric_kwargs)
        except detectors.DetectorUnavailableError as err:
            raise _flag_error(err.flag, str(err)) from None
        except frechet_inception_distance.RefStatsError as err:
            raise _flag_error('--ref', str(err)) from None
        if rank == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=network)
        results.append(result)
    return results


def _ranks(gpus: int | None) -> tuple[int, int, int]:
    try:
        rank, local_rank, world_size = distributed.env_ranks()
    except ValueError as err:
        raise _flag_error('--gpus', str(err)) from None
    if gpus is not None and gpus != world_size:
        raise _flag_error('--gpus', f'{gpus}, but {world_size} process(es) were started; launch with torchrun '
                                    f'--nproc_per_node={gpus} calc_metrics.py ...')
    return rank, local_rank, world_size


@click.command(help=__doc__)
@click.option('--network', 'network_pkl', metavar='PATH|URL', required=True, help='Network snapshot')
@click.option('--metrics', default='fid50k_full', show_default=True, help='Comma-separated list of metrics')
@click.option('--data', metavar='PATH', default=None, show_default='training_set_kwargs of the snapshot',
              help='Dataset to compare against (directory or zip)')
@click.option('--mirror', type=click.BOOL, is_flag=False, flag_value=True, default=None, metavar='[=BOOL]',
              show_default='as in the snapshot',
              help='Include x-flipped reals (legacy metrics only; *_full metrics never do); bare, =1/0 or =true/false')
@click.option('--no-mirror', is_flag=True, help='Same as --mirror=0')
@click.option('--gpus', type=click.IntRange(min=1), default=None, show_default='torchrun WORLD_SIZE, else 1',
              help='Number of processes (must match torchrun)')
@click.option('--detector', metavar='PATH|URL', default=None, show_default='official Inception-v3',
              help='Inception detector (.pt TorchScript, or a .pkl with --trust-detector) for FID, KID, IS')
@click.option('--detector-vgg16', metavar='PATH|URL', default=None, show_default='official VGG16',
              help='VGG16 detector (.pt TorchScript, or a .pkl with --trust-detector) for precision/recall and PPL')
@click.option('--trust-detector', is_flag=True,
              help='Load detectors that are not TorchScript by unpickling them, RUNNING code stored in them')
@click.option('--ref', metavar='NPZ', default=None, help='FID reference statistics (mu, sigma) instead of --data')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of the generated set')
@click.option('--workers', type=click.IntRange(min=0), default=3, show_default=True, help='DataLoader workers')
@click.option('--trusted', is_flag=True, help='Unpickle the snapshot normally and build the dataset class it names, '
                                               'RUNNING code stored in it')
@click.option('--verbose/--quiet', default=True, show_default=True, help='Progress bars and set-up lines')
@click.option('-n', '--dry-run', is_flag=True, help='Print the resolved options and exit')
def main(network_pkl, metrics, data, mirror, no_mirror, gpus, detector, detector_vgg16, trust_detector, ref, seed,
         workers, trusted, verbose, dry_run):
    if no_mirror:
        if mirror:
            raise _flag_error('--no-mirror', 'conflicts with --mirror; give one of them')
        mirror = False
    try:
        metric_names = metric_main.parse_metric_list(metrics)
    except ValueError as err:
        raise _flag_error('--metrics', str(err)) from None
    if not metric_names:
        raise _flag_error('--metrics', 'no metric given; e.g. --metrics=fid50k_full')
    _check_source('--detector', detector)
    _check_source('--detector-vgg16', detector_vgg16)
    _check_source('--ref', ref)
    if ref is not None:
        if not any(name.startswith('fid') for name in metric_names):
            raise _flag_error('--ref', f'only FID metrics use reference statistics, but --metrics={metrics}; add an '
                                       'FID metric (e.g. fid50k_full) or drop --ref')
        try:
            frechet_inception_distance.load_ref_stats(ref)  # Fail now, not after generating the images.
        except frechet_inception_distance.RefStatsError as err:
            raise _flag_error('--ref', str(err)) from None
    _check_source('--network', network_pkl)
    rank, local_rank, world_size = _ranks(gpus)
    device = torch.device('cuda', local_rank) if torch.cuda.is_available() else torch.device('cpu')
    metric_kwargs = dict(num_gpus=world_size, device=device, progress=verbose, detector=detector,
                         detector_vgg16=detector_vgg16, trust_detector=trust_detector, fid_ref=ref, random_seed=seed,
                         num_workers=workers)
    if dry_run:
        print(json.dumps(dict(network=network_pkl, metrics=metric_names, data=data, mirror=mirror,
                              **{k: str(v) if k == 'device' else v for k, v in metric_kwargs.items()}), indent=2))
        return
    with distributed.process_group(rank, world_size, local_rank=local_rank):  # Left synchronised (distributed.py).
        evaluate(network_pkl, metric_names, metric_kwargs, data, mirror, trusted, rank)


if __name__ == '__main__':
    main()

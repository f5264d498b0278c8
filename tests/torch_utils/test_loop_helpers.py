"""What the GAN and the diffusion loops share (torch_utils/loop_helpers.py): seeding, the tick schedule, the closing
lines, the temp-file folders and the kimg-stamped names."""

import numpy as np
import torch

from torch_utils import loop_helpers, signals
from torch_utils.finite import NonFiniteError


def test_seed_rngs_per_rank_and_numpy_optional():
    loop_helpers.seed_rngs(3, num_gpus=2, rank=1)
    draws = torch.rand(2), np.random.rand(2)
    torch.manual_seed(7)
    np.random.seed(7)
    assert torch.equal(draws[0], torch.rand(2)) and np.array_equal(draws[1], np.random.rand(2))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    loop_helpers.seed_rngs(3, num_gpus=2, rank=1, numpy=False)
    assert np.array_equal(np.random.get_state()[1], before) and torch.equal(torch.rand(2), draws[0])


def test_tick_ends():
    assert loop_helpers.tick_ends(0, 4, 0, 1000, done=False)  # The first step closes tick 0.
    assert not loop_helpers.tick_ends(1, 996, 0, 1000, done=False)
    assert loop_helpers.tick_ends(1, 1000, 0, 1000, done=False)
    assert loop_helpers.tick_ends(1, 8, 4, 1000, done=True)
    assert loop_helpers.kimg_to_nimg(0.07) == 70


def test_closing_lines():
    assert loop_helpers.interrupted_line(signals.Terminated(), 12, None) == (
        '\nInterrupted (SIGTERM) at kimg 0.012; the last snapshot is none written by this run')
    assert loop_helpers.interrupted_line(KeyboardInterrupt(), 4000, 'a.pkl') == (
        '\nInterrupted (SIGINT) at kimg 4.000; the last snapshot is a.pkl')
    wrapped = loop_helpers.nonfinite_at(NonFiniteError('G holds NaN', '--x'), 1500, 'snap.pkl')
    assert (str(wrapped), wrapped.flag) == ('G holds NaN (at kimg 1.500; the last good snapshot is snap.pkl)', '--x')


def test_temp_file_folders(tmp_path):
    run, other = tmp_path / 'run', tmp_path / 'other'
    run.mkdir(), other.mkdir()
    (other / 'snap.pkl').write_bytes(b'')
    assert loop_helpers.temp_file_folders([str(run), str(tmp_path / 'missing')], str(other / 'snap.pkl')) == [
        str(run), str(other)]
    assert loop_helpers.temp_file_folders([str(other)], str(other / 'snap.pkl')) == [str(other)]  # Once.
    assert loop_helpers.temp_file_folders([str(run)], str(other / 'gone.pkl')) == [str(run)]  # Not a file.


def test_kimg_file_name():
    assert loop_helpers.kimg_file_name('network-snapshot-', 12_345, '.pkl') == 'network-snapshot-000012.pkl'
    assert loop_helpers.kimg_file_name('training-state-', 999, '.pt') == 'training-state-000000.pt'

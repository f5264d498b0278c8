"""benchmarks/smart_study.py: the stage graph (which stage needs which), resume after an interrupted stage, the
paired table and the frontier's data on tiny stand-in runs, the metric adapter; stand-ins replace the metric
commands (metrics.train_classifier / metrics.compare)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import smart_study  # noqa: E402
import smart_study_metrics as sm  # noqa: E402
import smart_study_report as report  # noqa: E402
import smart_study_stages  # noqa: E402
import smart_study_stages as st  # noqa: E402

OPTS = dict(smart_study.QUICK, data='mnist5k', resolution='16x16', gan_flags='--cbase=64 --cmax=16', seeds=2,
            lambdas='0.1,1', draws='1,4', smart_freq=4, threads=1, quick=True)


def _graph(**overrides):
    return {s.name: s for s in smart_study.build_graph(dict(OPTS, **overrides), '/out')}


def test_stage_graph_needs():
    g = _graph()
    assert g['dataset'].needs == () and g['detector'].needs == ('dataset',) and g['dpm'].needs == ('dataset',)
    assert g['base-s1'].needs == ('dataset',)
    assert g['ft-control-s1'].needs == ('base-s1',) and g['ft-gauss-l0.3-s1'].needs == ('base-s1',)
    assert g['ft-smart-l1-d4-s0'].needs == ('base-s0', 'dpm')
    assert g['pick'].needs == tuple(f'eval-ft-{a}-s{s}' for s in (0, 1) for a in ('control', 'smart-l0.1-d1',
                                                                                   'smart-l1-d1'))
    assert g['scratch-smart-B-s1'].needs == ('dataset', 'pick', 'dpm')
    assert g['scratch-diffgan-s0'].needs == ('dataset',)
    assert g['eval-scratch-diffgan-s1'].needs == ('scratch-diffgan-s1', 'detector')
    assert g['trajectory-s0'].needs == ('base-s0', 'ft-control-s0', 'detector')
    assert g['truncation-s0'].needs == ('ft-control-s0', 'detector', 'dataset')
    assert 'trajectory-s1' not in g   # --ref-seeds 1
    runs = [n for n, s in g.items() if s.args is not None and s.args(lambda a, b: '<>')[0] == 'train.py']
    assert len(runs) == 2 * (1 + 1 + 2 * 2 + 1 + 3)   # per seed: base, control, ladder x draws, gauss, 3 scratch
    assert g['scratch-control-s1'].needs == ('base-s1',)
    assert g['eval-scratch-control-s1'].needs == ('scratch-control-s1', 'detector')
    assert set(g['report'].needs) == ({'dpm', 'pick', 'trajectory-s0', 'truncation-s0'} |
                                      {f'eval-{r}' for r in runs if not r.startswith('base')} |
                                      {'eval-scratch-control-s0', 'eval-scratch-control-s1'})
    order = list(g)
    assert all(order.index(n) < order.index(name) for name, s in g.items() for n in s.needs)


def test_stage_graph_with_a_zip_and_given_lambdas(tmp_path):
    g = _graph(data=str(tmp_path / 'd.zip'), scratch_lambdas='0.3,3')
    assert 'dataset' not in g and all('dataset' not in s.needs for s in g.values())
    assert g['pick'].needs == () and g['pick'].fn(None) == dict(lambdas=[0.3, 3.0], how='given')
    assert g['scratch-smart-A-s0'].needs == ('pick', 'dpm')


def test_stage_commands_use_earlier_results():
    g = _graph()
    results = {('base-s0', 'pkl'): '/b.pkl', ('dpm', 'pkl'): '/d.pkl', ('pick', 'lambdas'): [0.3, 3.0],
               ('ft-control-s0', 'run_dir'): '/out/runs/ft-control-s0'}
    lookup = lambda stage, key: results[(stage, key)]   # noqa: E731
    args = g['ft-smart-l0.1-d4-s0'].args(lookup)
    assert args[:5] == ['train.py', '--outdir=/out/runs/ft-smart-l0.1-d4-s0', '--data=/out/mnist5k-16x16.zip',
                        '--cbase=64', '--cmax=16']
    assert args[5:] == ['--workers=0', '--threads=1', '--seed=0', '--kimg=0.096', '--tick=0.008', '--snap=1',
                        '--resume=/b.pkl', '--smart-lambda=0.1', '--smart-freq=4', '--smart-schedule=ddpm-linear',
                        '--smart-t=40,60', '--smart-dpm=/d.pkl', '--smart-draws=4']
    scratch = g['scratch-smart-B-s0'].args(lookup)
    assert '--kimg=0.032' in scratch and '--smart-lambda=3' in scratch and not any('--resume' in a for a in scratch)
    assert g['scratch-diffgan-s0'].args(lookup)[-1] == '--diffgan'
    assert g['eval-ft-control-s0'].args(lookup) == [
        '-m', 'metrics.compare', '/out/runs/ft-control-s0', '--detector=/out/detector.pt', '--num-gen', '256',
        '--json', '/out/eval/ft-control-s0/compare.json']
    assert g['detector'].args(lookup) == ['-m', 'metrics.train_classifier', '--data=/out/mnist5k-16x16.zip',
                                          '--out=/out/detector.pt']


def test_dry_run_prints_the_graph_and_writes_nothing(tmp_path):
    out = tmp_path / 'study'
    result = CliRunner().invoke(smart_study.main, [f'--outdir={out}', '--dry-run', '--seeds=1', '--draws=1',
                                                   '--lambdas=0.1,0.3,1,3,10'])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == 'dataset  <- (nothing)'
    assert lines[1].startswith('    $ python dataset_tool.py --source=mnist5k --resolution=16x16 --dest=')
    assert "'--resume=<base-s0.pkl>'" in result.output and '--cfg=cpu' in result.output
    assert lines[-1] == f'{len([x for x in lines if "<-" in x])} stages, 11 GAN training runs'
    assert not out.exists()


@pytest.mark.parametrize('args, flag', [(['--lambdas=0.1,x'], '--lambdas'), (['--data=missing.zip'], '--data'),
                                        (['--scratch-lambdas=1'], '--scratch-lambdas'),
                                        (['--lambdas=0.1'], '--lambdas'), (['--draws=1.5'], '--draws'),
                                        (['--psis=1.2'], '--psis')])
def test_bad_options_name_the_flag(tmp_path, args, flag):
    result = CliRunner().invoke(smart_study.main, [f'--outdir={tmp_path}', '--dry-run'] + args)
    assert result.exit_code == 2 and flag in result.output and 'Traceback' not in result.output


def _stage(name, needs, calls, fail=None):
    def fn(lookup):
        calls.append(name)
        if fail and fail[0] == name:
            fail.pop()
            raise RuntimeError(f'{name} interrupted')
        return dict(value=len(name) + sum(lookup(n, 'value') for n in needs))
    return st.Stage(name, needs, fn=fn)


def test_resume_after_an_interrupted_stage(tmp_path):
    calls, fail = [], ['b']
    stages = [_stage('a', (), calls), _stage('b', ('a',), calls, fail), _stage('c', ('b',), calls),
              _stage('d', ('a',), calls)]
    study = st.Study(str(tmp_path), dict(x=1))
    with pytest.raises(RuntimeError, match='^b interrupted$'):
        st.run_graph(stages, study.run_stage, 1)
    assert calls == ['a', 'b']   # Nothing starts after the failure.
    state = json.loads((tmp_path / 'state.json').read_text())['stages']
    assert list(state) == ['a'] and state['a']['result'] == dict(value=1) and state['a']['time_sec'] >= 0
    calls.clear()
    study = st.Study(str(tmp_path), dict(x=1))
    st.run_graph(stages, study.run_stage, 2)
    assert sorted(calls) == ['b', 'c', 'd']   # 'a' is not run again.
    assert study.lookup('c', 'value') == 1 + (1 + 1) and study.lookup('d', 'value') == 2
    with pytest.raises(Exception, match=r'--outdir: .* holds a study with other options'):
        st.Study(str(tmp_path), dict(x=2))


def test_stages_made_from_a_lost_stage_run_again(tmp_path):
    calls = []
    stages = [_stage('a', (), calls), _stage('b', ('a',), calls), _stage('c', ('b',), calls),
              _stage('d', ('a',), calls)]
    study = st.Study(str(tmp_path), {})
    st.run_graph(stages, study.run_stage, 1)
    del study.state['stages']['b']
    assert study.forget_stale(stages) == ['c']
    assert sorted(json.loads((tmp_path / 'state.json').read_text())['stages']) == ['a', 'd']


def test_interrupted_cli_stage_starts_over_in_an_empty_folder(tmp_path):
    folder = tmp_path / 'run'
    folder.mkdir()
    (folder / 'left-over.pkl').write_text('partial')
    script = (f'import os; n = len(os.listdir({str(folder)!r})); '
              f'open(os.path.join({str(folder)!r}, "out.txt"), "w").write(str(n))')
    stage = st.Stage('cli', (), args=lambda lk: ['-c', script], folder=str(folder),
                              collect=lambda lk: dict(files=sorted(os.listdir(folder))))
    study = st.Study(str(tmp_path), {})
    study.run_stage(stage)
    assert study.lookup('cli', 'files') == ['out.txt'] and (folder / 'out.txt').read_text() == '0'
    assert (tmp_path / 'logs' / 'cli.log').read_text().startswith('$ python -c ')
    broken = st.Stage('broken', (), args=lambda lk: ['-c', 'raise SystemExit("no data")'])
    with pytest.raises(Exception, match=r'stage broken: `python -c ` exited with 1; log .*broken.log ends with'):
        study.run_stage(broken)


def test_interrupted_training_stage_resumes_from_its_own_last_snapshot(tmp_path):
    """A resumable (train.py) stage keeps what an interrupted try wrote and gets --resume=<its highest-kimg
    snapshot> in place of the given --resume; one whose snapshot already reached --kimg does not run again."""
    folder = tmp_path / 'run'
    (folder / '00000-a').mkdir(parents=True)
    (folder / '00001-a').mkdir()
    for name in ('00000-a/network-snapshot-000008.pkl', '00001-a/network-snapshot-000016.pkl',
                 '00000-a/network-snapshot-000004.pkl'):
        (folder / name).write_text('snapshot')
    script = f'import sys; open({str(tmp_path / "argv.txt")!r}, "w").write(" ".join(sys.argv[1:]))'
    args = lambda lk: ['-c', script, '--kimg=24', '--resume=/base.pkl', '--seed=0']   # noqa: E731
    study = st.Study(str(tmp_path), {})
    study.run_stage(st.Stage('train', (), args=args, folder=str(folder), resumable=True))
    own = folder / '00001-a' / 'network-snapshot-000016.pkl'
    assert (tmp_path / 'argv.txt').read_text() == f'--kimg=24 --seed=0 --resume={own}'
    assert (folder / '00000-a' / 'network-snapshot-000004.pkl').exists()   # Nothing emptied.
    (tmp_path / 'argv.txt').unlink()
    done = st.Stage('done', (), args=lambda lk: ['-c', script, '--kimg=16'], folder=str(folder), resumable=True,
                    collect=lambda lk: dict(pkl=st.latest_snapshot(str(folder))))
    study.run_stage(done)
    assert not (tmp_path / 'argv.txt').exists() and study.lookup('done', 'pkl') == str(own)
    assert st.latest_snapshot(str(tmp_path / 'logs')) is None


def test_scratch_control_finds_the_base_snapshot_in_any_of_its_run_dirs(tmp_path):
    """A base resumed once has two run dirs; its result names the last one, its snapshot at --scratch-kimg is in the
    first; a --scratch-kimg with no snapshot is one line naming the flag."""
    for run, kimgs in (('00000-a', (0, 8, 16)), ('00001-a-resume', (24, 32))):
        (tmp_path / 'base-s0' / run).mkdir(parents=True)
        for k in kimgs:
            (tmp_path / 'base-s0' / run / f'network-snapshot-{k:06d}.pkl').write_text('x')
    stage = _graph(scratch_kimg=16.0, snap_kimg=8.0)['scratch-control-s0']
    result = stage.fn(lambda name, key: {('base-s0', 'run_dir'): str(tmp_path / 'base-s0' / '00001-a-resume')}[
        (name, key)])
    assert result == dict(pkl=str(tmp_path / 'base-s0' / '00000-a' / 'network-snapshot-000016.pkl'),
                          run_dir=str(tmp_path / 'base-s0' / '00000-a'))
    with pytest.raises(Exception, match=r'no network-snapshot at 12 kimg .*--scratch-kimg must be a multiple'):
        smart_study.snapshot_at(str(tmp_path / 'base-s0'), 12.0)


def test_parallel_stages_respect_needs_and_the_job_limit():
    import threading
    import time
    lock, log, live, peak = threading.Lock(), [], [0], [0]

    def run(stage):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            log.append(('start', stage.name))
        time.sleep(0.05)
        with lock:
            live[0] -= 1
            log.append(('end', stage.name))

    stages = [st.Stage(n, needs) for n, needs in (('a', ()), ('b', ()), ('c', ('a', 'b')), ('d', ('a',)))]
    st.run_graph(stages, run, 2)
    assert peak[0] == 2 and sorted(n for e, n in log if e == 'end') == ['a', 'b', 'c', 'd']
    assert log.index(('start', 'c')) > max(log.index(('end', 'a')), log.index(('end', 'b')))
    assert log.index(('start', 'd')) > log.index(('end', 'a'))


def _m(fd, recall=0.5, class_kl=0.1, precision=0.6):
    return dict(fd=fd, kid=0.01, precision=precision, recall=recall, class_kl=class_kl, recognisable=0.8,
                time_sec=10.0)


ROWS = {'ft-control': {0: _m(10.0), 1: _m(14.0)},                                  # FD seed std 2.828
        'ft-smart-l0.1-d1': {0: _m(9.0, recall=0.4), 1: _m(13.0, recall=0.3)},      # -1, -1: within the spread
        'ft-smart-l1-d1': {0: _m(5.0, class_kl=0.3), 1: _m(9.0, class_kl=0.5)},     # -5, -5: beyond it
        'scratch-control': {0: _m(8.0), 1: _m(14.0)},                               # Base at the scratch length.
        'scratch-smart-A': {0: _m(12.0), 1: _m(20.0)}}                              # +4, +6 against it.


def test_paired_table_on_stand_in_runs():
    lines = report.paired_table(ROWS, [1.0, 0.1], 33.51).splitlines()
    assert lines[0] == ('| arm | lambda (eps; x0 equiv.) | FD | KID | precision | recall | class KL | recognisable | '
                        'train time (s) | FD - control | recall - control | class KL - control | '
                        'FD better > seed spread |')
    cells = [line.split(' | ') for line in lines[2:]]
    assert [c[0] for c in cells] == ['| ft-control', '| ft-smart-l0.1-d1 (fine-tune)', '| ft-smart-l1-d1 (fine-tune)',
                                     '| scratch-control', '| scratch-smart-A (from scratch)']
    assert cells[0][1:3] == ['-', '12.00 ± 2.83'] and cells[0][-1] == '- |'
    assert cells[1][1] == '0.1; 3.35' and cells[1][-4:] == ['-1.00 ± 0.00', '-0.150 ± 0.071', '+0.0000 ± 0.0000',
                                                           'no |']
    assert cells[2][-4:] == ['-5.00 ± 0.00', '+0.000 ± 0.000', '+0.3000 ± 0.1414', '**yes** |']
    assert cells[3][1] == '-' and cells[3][-1] == '- |'
    assert cells[4][1] == '1; 33.5' and cells[4][-4:-2] == ['+5.00 ± 1.41', '+0.000 ± 0.000']


def test_frontier_data():
    trajectory = [[dict(kimg=0.0, fd=50.0, precision=0.1, recall=0.0, kid=1.0), dict(kimg=4.0, fd=20.0,
                                                                                    precision=0.5, recall=0.4)]]
    truncation = [[dict(psi=1.0, fd=12.0, precision=0.6, recall=0.5), dict(psi=0.5, fd=30.0, precision=0.9,
                                                                          recall=0.1)]]
    rows = dict(ROWS, **{'ft-smart-l1-d4': {0: _m(6.0, precision=0.7), 1: _m(8.0, precision=0.9)}})
    data = report.frontier_data(rows, [1.0, 0.1], trajectory, truncation)
    assert data['control'] == dict(arm='ft-control', precision=0.6, recall=0.5, fd=12.0, fd_std=pytest.approx(
        2 ** 1.5), kind='control', source=None, lam=None, draws=None)
    arms = {p['arm']: p for p in data['arms']}
    assert arms['ft-smart-l1-d4']['precision'] == pytest.approx(0.8) and arms['ft-smart-l1-d4']['fd'] == 7.0
    assert arms['ft-smart-l0.1-d1']['recall'] == pytest.approx(0.35) and arms['scratch-smart-A']['lam'] == 1.0
    assert data['fd_vs_lambda'] == {'trained, 1 draw(s)': [(0.1, 11.0, pytest.approx(2 ** 1.5)),
                                                          (1.0, 7.0, pytest.approx(2 ** 1.5))],
                                    'trained, 4 draw(s)': [(1.0, 7.0, pytest.approx(2 ** 0.5))]}
    assert data['trajectory'] == [[dict(kimg=0.0, precision=0.1, recall=0.0, fd=50.0),
                                   dict(kimg=4.0, precision=0.5, recall=0.4, fd=20.0)]]
    assert data['truncation'][0][1] == dict(psi=0.5, precision=0.9, recall=0.1, fd=30.0)


def test_pick_lambdas_takes_the_two_lowest_paired_fd():
    fd = {('ft-control', 0): 10.0, ('ft-control', 1): 12.0, ('ft-smart-l0.1-d1', 0): 9.0, ('ft-smart-l0.1-d1', 1): 12.0,
          ('ft-smart-l1-d1', 0): 8.0, ('ft-smart-l1-d1', 1): 13.0, ('ft-smart-l10-d1', 0): 30.0,
          ('ft-smart-l10-d1', 1): 30.0}
    lookup = lambda stage, key: fd[report.arm_of(stage[len('eval-'):])]   # noqa: E731
    picked = smart_study.pick_lambdas(dict(OPTS, lambdas='0.1,1,10', scratch_lambdas='auto'), lookup)
    assert picked['lambdas'] == [0.1, 1.0]          # -0.5 each: the tie goes to the smaller lambda first
    assert picked['mean_fd_difference'] == {0.1: -0.5, 1.0: -0.5, 10.0: 19.0}


def test_write_report_from_stand_in_stages(tmp_path):
    results = {}
    for arm, per_seed in ROWS.items():
        for seed, m in per_seed.items():
            results[f'eval-{arm}-s{seed}'] = {k: v for k, v in m.items() if k != 'time_sec'}
            results[f'{arm}-s{seed}'] = dict(time_sec=m['time_sec'])
    results.update({'pick': dict(lambdas=[1.0, 0.1]), 'dpm': dict(band_error=0.25),
                    'trajectory-s0': dict(points=[dict(kimg=1.0, fd=30.0, precision=0.2, recall=0.1)]),
                    'truncation-s0': dict(points=[dict(psi=1.0, fd=12.0, precision=0.6, recall=0.5)])})
    (tmp_path / 'state.json').write_text(json.dumps(dict(stages={'dpm': dict(time_sec=3.0), 'base-s0': dict(
        time_sec=40.0)})))
    lookup = lambda stage, key: results[stage][key]   # noqa: E731
    runs = [f'{arm}-s{s}' for arm in ('scratch-smart-A', 'ft-smart-l0.1-d1', 'ft-control', 'ft-smart-l1-d1',
                                      'scratch-control') for s in (0, 1)]
    out = report.write_report(dict(OPTS, ref_seeds=1), lookup, str(tmp_path), runs, 33.51)
    assert out['flagged'] == ['ft-smart-l1-d1']
    assert json.loads((tmp_path / 'frontier.json').read_text())['scratch_control']['fd'] == 11.0
    one_seed = {arm: {0: per_seed[0]} for arm, per_seed in ROWS.items()}
    assert report.paired_table(one_seed, [1.0, 0.1], 33.51).splitlines()[3].endswith('| n/a (1 seed) |')
    table = (tmp_path / 'table.md').read_text()
    assert table.splitlines()[2].startswith('| ft-control | - | 12.00 ± 2.83 |')  # The controls come first.
    assert table.splitlines()[3].startswith('| scratch-control | - | 11.00 ± 4.24 |')
    assert table.splitlines()[3].split(' | ')[8] == '-'                          # No train time of its own.
    assert 'band error 0.2500' in table
    assert (tmp_path / 'timing.md').read_text().splitlines()[-1] == '| total (all invocations) | 43 |'
    assert json.loads((tmp_path / 'frontier.json').read_text())['control']['fd'] == 12.0
    assert (tmp_path / 'frontier.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_adapter_reads_the_compare_json(tmp_path):
    metrics = dict(fd=3.0, kid=0.1, precision=0.5, recall=0.25, class_kl=0.02, recognisable=0.9)
    path = tmp_path / 'c.json'
    path.write_text(json.dumps(dict(runs=[dict(run_dir='runs/a', snapshot='runs/a/s.pkl', kimg=2, metrics=metrics)],
                                    groups=[], pairs=[])))
    assert sm.read_compare(str(path)) == {os.path.abspath('runs/a'): dict(metrics, kimg=2.0, snapshot='runs/a/s.pkl')}
    del metrics['recognisable']
    path.write_text(json.dumps(dict(runs=[dict(run_dir='r', snapshot='s', kimg=1, metrics=metrics)])))
    with pytest.raises(ValueError, match=r"run 'r' lacks the metrics \['recognisable'\]"):
        sm.read_compare(str(path))


def test_x0_per_eps_is_the_band_mean_of_inverse_sigma_squared():
    assert smart_study.x0_per_eps() == pytest.approx(33.5127, abs=1e-4)   # sigma 0.1437..0.2085 (README, SMaRt)


def test_recognisable_share():
    probs = np.array([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]])
    assert sm.recognisable_share(probs) == 0.5
    with pytest.raises(ValueError, match=r'\[N, K\] with N > 0'):
        sm.recognisable_share(np.zeros([0, 2]))


def test_truncated_evaluation_matches_the_metric_code_at_psi_1(tmp_path):
    import torch
    from tiny_datasets import make_zip
    from tiny_metrics import make_generator, save_torchscript
    from metrics import frechet_inception_distance, metric_utils
    from training import snapshot
    data = make_zip(tmp_path / 'd.zip', num=32, res=8)
    detector = save_torchscript(tmp_path / 'det.pt')
    G = make_generator()
    pkl = str(tmp_path / 'net.pkl')
    snapshot.save_network_pkl(pkl, dict(G=G, G_ema=G))
    at_1 = sm.evaluate_truncated(pkl, detector, data, 64, 1.0)
    opts = metric_utils.MetricOptions(G=snapshot.load_network_pkl(pkl)['G_ema'], device='cpu', cache=False,
                                      dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data),
                                      detector=detector, detector_vgg16=detector, num_workers=0, random_seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        assert at_1['fd'] == pytest.approx(frechet_inception_distance.compute_fid(opts, None, 64), rel=1e-9)
    assert set(at_1) == set(sm.METRICS) and 0 <= at_1['recall'] <= 1
    at_0 = sm.evaluate_truncated(pkl, detector, data, 64, 0.05)
    assert at_0['fd'] != at_1['fd']
    with pytest.raises(ValueError, match=r'psi=0: expected a truncation in \(0, 1\]'):
        sm.evaluate_truncated(pkl, detector, data, 64, 0)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get('SMART_GAN_LONG_TESTS'),
                    reason='the whole study graph end to end takes 4-10 minutes on 2 cores: set SMART_GAN_LONG_TESTS=1')
def test_tiny_study_end_to_end_with_stand_in_metric_commands(tmp_path, monkeypatch):
    """The wiring, not the science: scikit-learn digits, tiny budgets and networks, the metric commands replaced
    by tests/support/standin_*.py; then a rerun skips every stage, and one that lost two stages runs just those."""
    pytest.importorskip('sklearn')
    import standin_compare
    monkeypatch.setattr(sm, 'DETECTOR_MODULE', 'standin_train_classifier')
    monkeypatch.setattr(sm, 'COMPARE_MODULE', 'standin_compare')
    monkeypatch.setattr(sm, 'evaluate', lambda pkl, det, num_gen, seed=0: standin_compare.evaluate_snapshot(
        pkl, det, num_gen=num_gen, seed=seed))
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT / 'tests' / 'support'), str(ROOT)]))
    out = tmp_path / 'study'
    args = [f'--outdir={out}', '--data=sklearn-digits', '--quick', '--seeds=1', '--lambdas=0.1,1', '--num-gen=64',
            '--gan-flags=--cbase=256 --cmax=16 --map-depth=2 --batch=8 --aug=noaug', '--jobs=2']
    result = CliRunner().invoke(smart_study.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    state = json.loads((out / 'state.json').read_text())['stages']
    assert 0 < state['dpm']['result']['band_error'] < 2 and 'band error' in result.output
    assert state['pick']['result']['lambdas'] in ([0.1, 1.0], [1.0, 0.1])
    table = (out / 'table.md').read_text().splitlines()
    assert [line.split(' | ')[0] for line in table[2:10]] == [
        '| ft-control', '| scratch-control', '| ft-smart-l0.1-d1 (fine-tune)', '| ft-smart-l1-d1 (fine-tune)',
        '| ft-gauss-l0.3 (fine-tune)', '| scratch-smart-A (from scratch)', '| scratch-smart-B (from scratch)',
        '| scratch-diffgan (from scratch)']
    frontier = json.loads((out / 'frontier.json').read_text())
    assert [q['psi'] for q in frontier['truncation'][0]] == [1.0, 0.5] and len(frontier['trajectory'][0]) == 3
    timing = (out / 'timing.md').read_text()
    assert all(f'| {stage} |' in timing for stage in state if stage != 'report')   # Written within 'report'.
    # One snapshot, three routes (compare's subprocess, the trajectory, psi 1 of the sweep): the same numbers.
    fd = state['eval-ft-control-s0']['result']['fd']
    assert frontier['truncation'][0][0]['fd'] == fd and frontier['trajectory'][0][-1]['fd'] == fd
    assert table[2].split(' | ')[-1] == table[3].split(' | ')[-1] == '- |'
    assert table[4].split(' | ')[-1] == 'n/a (1 seed) |'
    logs = {p.name: p.stat().st_mtime_ns for p in (out / 'logs').iterdir()}
    assert CliRunner().invoke(smart_study.main, args).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / 'logs').iterdir()} == logs   # Every stage skipped.
    saved = json.loads((out / 'state.json').read_text())
    del saved['stages']['scratch-diffgan-s0'], saved['stages']['report']  # As if interrupted in that run.
    (out / 'state.json').write_text(json.dumps(saved))
    assert CliRunner().invoke(smart_study.main, args).exit_code == 0
    changed = {p.name for p in (out / 'logs').iterdir() if p.stat().st_mtime_ns != logs.get(p.name)}
    assert changed == {'scratch-diffgan-s0.log', 'eval-scratch-diffgan-s0.log'}   # And what was made from it.


def test_state_file_that_is_not_a_study_state_is_one_line(tmp_path):
    import click  # noqa: PLC0415
    (tmp_path / 'state.json').write_text('{"options": {}')
    with pytest.raises(click.ClickException, match=r'^--outdir: .*state\.json is not a study state \(.*\); pick a '
                                                   r'new --outdir$'):
        smart_study_stages.open_state(str(tmp_path), {'seeds': 3})
    (tmp_path / 'state.json').write_text('{"options": {"seeds": 2}, "stages": {}}')
    with pytest.raises(click.ClickException, match=r"other options \(stored, given\): \{'seeds': \(2, 3\)\}"):
        smart_study_stages.open_state(str(tmp_path), {'seeds': 3})
    assert smart_study_stages.open_state(str(tmp_path), {'seeds': 2})[1]['options'] == {'seeds': 2}


def test_manifold_band_loss_of_the_identity_denoiser_is_the_noise_power():
    """benchmarks/smart_study_manifold.py: with D(x_hat) = x_hat the eps-form loss is mean(eps^2) of its own draws."""
    import torch
    import smart_study_manifold as mf

    class Identity(torch.nn.Module):
        def forward(self, x, sigma, labels=None):
            return x

    images = torch.zeros(50, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    torch.randint(40, 61, [50], generator=gen)
    expected = torch.randn(images.shape, generator=gen).square().mean().item()
    assert mf.band_loss(Identity(), images, seed=0, batch=16) == pytest.approx(expected, rel=1e-5)

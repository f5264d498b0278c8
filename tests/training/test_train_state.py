"""The typed run state of the GAN loop (train_state.TrainState): set-up fills every field but the loop's reporter,
a misspelt field is an error, and a resume refused for the data gives its hint as data (the CLI words it)."""

import dataclasses

import pytest
from tiny_datasets import make_zip
from tiny_training import tiny_config

from training import run_outputs, snapshot, train_state
from training.augment import augpipe_specs


@pytest.fixture(scope='module')
def data_zip(tmp_path_factory):
    return make_zip(tmp_path_factory.mktemp('data') / 'tiny.zip', num=16, res=8, seed=123)


def _setup(data_zip, **overrides):
    return train_state.setup_training(**tiny_config(data_zip, **overrides), log=lambda *args: None)


def test_set_up_fills_every_field_and_misspelt_fields_fail(data_zip):
    state = _setup(data_zip, augment_kwargs=dict(augpipe_specs['bgc']), augment_p=0.5, ada_target=0.6)
    assert isinstance(state, train_state.TrainState)
    unset = [field.name for field in dataclasses.fields(state) if getattr(state, field.name) is None]
    assert unset == ['reporter']  # training_loop opens it (it writes stats.jsonl in the run dir).
    assert state['G'] is state.G and state.ada.augment_pipe is state.augment_pipe
    with pytest.raises(AttributeError):
        state.cur_nimgs = 4  # Slots: a typo is no silent new key.


def test_a_resume_refused_for_the_data_names_no_flag(data_zip, tmp_path):
    state = _setup(data_zip)
    pkl = tmp_path / 'snap.pkl'
    snapshot.save_network_pkl(pkl, run_outputs.snapshot_data(state, next_tick=1))
    other = make_zip(tmp_path / 'res16.zip', num=16, res=16, seed=1)
    with pytest.raises(train_state.ResumeDataError) as info:
        _setup(other, resume_pkl=str(pkl))
    err = info.value
    assert (err.hints, err.network, err.attr, err.stored, err.wanted) == (['data'], 'G', 'img_resolution', 8, 16)
    assert str(err) == (f'{pkl}: G has img_resolution 8 but this run needs 16 (set by the data (training_set_kwargs: '
                        'path, use_labels)); resume with a snapshot trained on data like this')
    assert '--' not in str(err)
    assert '(set by --data and --cond);' in err.message('--data and --cond')

"""The `facemood` command as a user runs it: a real process, real files, exit codes and messages."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import facemood

FER_CLASSES = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']


def no_traceback(p):
    assert 'Traceback' not in p.stderr + p.stdout, p.stderr


def test_settings_shows_origins(site):
    p = facemood('settings', '--json', env=site)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s['data_dir'] == dict(value=site['FACEMOOD_DATA_DIR'], origin='$FACEMOOD_DATA_DIR')
    assert s['wandb_mode']['value'] == 'offline'


def test_build_and_info_synthetic(site):
    p = facemood('data', 'build', 'synthetic', '--n', 700, env=site)
    assert p.returncode == 0, p.stderr
    assert 'happy' in p.stdout
    p = facemood('data', 'info', 'synthetic', '--n', 700, '--json', env=site)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert {'classes', 'counts', 'size', 'fingerprint', 'path'} <= set(info)
    assert info['classes'] == FER_CLASSES and info['size'] == 48
    assert sum(n for split in info['counts'].values() for n in split.values()) == 700
    assert set(info['counts']) == {'train', 'val', 'test'}
    assert Path(info['path']).is_file() and Path(info['path']).is_relative_to(site['FACEMOOD_DATA_DIR'])


def test_missing_dataset_says_what_to_do(site):
    p = facemood('data', 'info', 'fer2013', env=site)
    assert p.returncode == 2
    no_traceback(p)
    assert 'facemood data download fer2013' in p.stderr and site['FACEMOOD_DATA_DIR'] in p.stderr


def write_csv(path, rows):
    path.write_text('emotion,pixels,Usage\n' + ''.join(f'{e},{px},{u}\n' for e, px, u in rows))


def test_fer2013_csv(site, tmp_path):
    rng = np.random.default_rng(0)
    px = lambda: ' '.join(map(str, rng.integers(0, 256, 48 * 48)))
    rows = [(i % 7, px(), u) for i, u in enumerate(['Training'] * 14 + ['PublicTest'] * 7 + ['PrivateTest'] * 7)]
    write_csv(tmp_path / 'fer.csv', rows)
    p = facemood('data', 'build', tmp_path / 'fer.csv', env=site)
    assert p.returncode == 0, p.stderr
    info = json.loads(facemood('data', 'info', tmp_path / 'fer.csv', '--json', env=site).stdout)
    assert info['classes'] == FER_CLASSES
    assert {s: sum(c.values()) for s, c in info['counts'].items()} == dict(train=14, val=7, test=7)


def test_bad_csv_row_names_the_line(site, tmp_path):
    rows = [(0, ' '.join(['1'] * 2304), 'Training'), (3, ' '.join(['1'] * 2303), 'Training')]
    write_csv(tmp_path / 'bad.csv', rows)
    p = facemood('data', 'build', tmp_path / 'bad.csv', env=site)
    assert p.returncode == 2
    no_traceback(p)
    assert 'bad.csv' in p.stderr and 'line 3' in p.stderr
    assert not list(Path(site['FACEMOOD_DATA_DIR']).rglob('*.npz')), 'nothing half-written'
    p = facemood('data', 'build', tmp_path / 'bad.csv', '--skip-bad', env=site)
    assert p.returncode == 0, p.stderr


def test_class_folders_with_a_bad_file(site, tmp_path):
    root = tmp_path / 'faces' / 'Data'
    for i, c in enumerate(['Angry', 'Fear', 'Happy', 'Sad', 'Surprise']):
        (root / c).mkdir(parents=True)
        for j in range(10):
            Image.fromarray(np.full((60 + j, 50, 3), 20 * i + j, np.uint8)).save(root / c / f'{j}.jpg')
    (root / 'Happy' / 'notes.jpg').write_text('not an image')
    p = facemood('data', 'build', tmp_path / 'faces', env=site)
    assert p.returncode == 2
    no_traceback(p)
    assert 'notes.jpg' in p.stderr
    p = facemood('data', 'build', tmp_path / 'faces', '--skip-bad', env=site)
    assert p.returncode == 0, p.stderr
    info = json.loads(facemood('data', 'info', tmp_path / 'faces', '--json', env=site).stdout)
    assert info['classes'] == ['angry', 'fear', 'happy', 'sad', 'surprise']
    assert sum(n for s in info['counts'].values() for n in s.values()) == 50


def test_download_without_credentials_explains(site, tmp_path):
    env = dict(site, HOME=str(tmp_path / 'home'), KAGGLE_CONFIG_DIR=str(tmp_path / 'home' / '.kaggle'))
    p = facemood('data', 'download', 'fer2013', env=env)
    assert p.returncode != 0
    no_traceback(p)
    assert 'KAGGLE_USERNAME' in p.stderr and 'kaggle.json' in p.stderr


def test_missing_source_is_clear(site):
    p = facemood('data', 'build', '/no/such/folder', env=site)
    assert p.returncode == 2
    no_traceback(p)
    assert '/no/such/folder' in p.stderr


def test_version_is_the_installed_one():
    from importlib.metadata import version
    p = facemood('--version')
    assert p.returncode == 0 and p.stdout == f"facemood {version('facemood')}\n", p.stdout + p.stderr

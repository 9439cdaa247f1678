"""The real data: FER2013's Kaggle download (`../shared/data/fer2013/archive.zip` from the project root) read by the paper
protocol, a short real training run, and the shipped model's accuracy on PrivateTest. Skipped, saying why, without the archive."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, facemood

ARCHIVE = ROOT.parent / 'shared' / 'data' / 'fer2013' / 'archive.zip'
pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"FER2013 is not at {ARCHIVE} (see its README for the terms)")
PRIVATE_TEST = dict(angry=491, disgust=55, fear=528, happy=879, sad=594, surprise=416, neutral=626)  # the official counts


@pytest.fixture(scope='module')
def fer(tmp_path_factory):
    "The archive's cache, built once for the module: by the protocol, train copies of val/test faces dropped."
    from facemood.cache import build_cache, cache_info
    d = tmp_path_factory.mktemp('data')
    return cache_info(build_cache(ARCHIVE, data_dir=d), data_dir=d), d


def test_protocol_splits_by_file_name(fer):
    from facemood.cache import cache_info
    info, d = fer
    assert info['protocol'] == 'fer2013' and 'PublicTest -> val, PrivateTest -> test' in info['notes'][0]
    assert info['counts']['test'] == PRIVATE_TEST and sum(info['counts']['val'].values()) == 3589
    dup = info['duplicates']
    assert dup['dropped'] == 703 and dup['conflicting_labels'] == 160   # train faces that are also in PublicTest or PrivateTest
    assert sum(info['counts']['train'].values()) == 28709 - dup['dropped']
    kept = cache_info(ARCHIVE, data_dir=d, drop_duplicates=False, force=True)
    assert [sum(kept['counts'][s].values()) for s in ('train', 'val', 'test')] == [28709, 3589, 3589]
    assert kept['counts']['test'] == info['counts']['test'] and kept['counts']['val'] == info['counts']['val']


def test_data_info_says_the_protocol(site):
    p = facemood('data', 'info', ARCHIVE, env=site)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'FER2013 protocol from the file names' in p.stdout and 'training copies of val/test images dropped' in p.stdout


def test_shipped_model_reads_real_faces(fer):
    "The model that answers when none is named: PrivateTest accuracy above a floor, one crop per face, and its flag passes real faces."
    from facemood.cache import load_cache
    from facemood.predictor import Predictor
    info, _ = fer
    faces, labels = load_cache(info['path']).get('test')
    p = Predictor()
    out = p.predict(faces)
    acc = float((out['probs'].argmax(1) == labels).mean())
    assert acc >= 0.66, f"PrivateTest accuracy {acc:.4f}"
    assert out['in_distribution'].mean() >= 0.95
    card = p.card
    assert card['use']['training_data']['name'] == 'FER2013' and abs(card['evaluation']['served']['accuracy'] - acc) < 0.002


def test_short_real_training_run(site):
    "The CPU recipe on the real archive, cut to a few batches: data, fit, evaluation on PrivateTest, export and registration."
    p = facemood('run', 'train', '-f', 'params/base.yaml', '-f', 'params/fer2013-cpu.yaml', '-p', 'source', ARCHIVE,
                 '-p', 'max_epochs', '1', '-p', 'tta', 'false', '-p', 'model_name', 'fer-smoke',
                 '-y', 'trainer: {limit_train_batches: 8, limit_val_batches: 4}', env=site, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    [run] = sorted((Path(site['FACEMOOD_OUTPUTS_DIR']) / 'train').glob('*fer2013-cpu*/run.json'))
    rec, met = json.loads(run.read_text()), json.loads((run.parent / 'metrics.json').read_text())
    assert rec['data']['counts']['test'] == PRIVATE_TEST
    assert met['test_n'] == 3589 and met['registered'] == 'fer-smoke:v1'
    card = json.loads((run.parent / 'card.json').read_text())
    assert card['data']['protocol'] == 'fer2013' and card['use']['training_data']['name'] == 'FER2013'
    assert card['architecture']['kwargs'] == {'width': 32, 'hidden': 0, 'dropout': 0.2}
    assert np.isfinite(met['test_acc'])

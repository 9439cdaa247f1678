"""The drift runbook through the real `facemood run drift` command: a simulated shift, a prediction log, bad inputs; and the
false-alarm rate of its verdict on unseen faces of the training population."""
import json
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from conftest import ROOT, facemood

TRAIN = ['-f', 'params/base.yaml', '-f', 'params/quickstart.yaml', '-p', 'synthetic_n', '700', '-p', 'max_epochs', '1',
         '-p', 'batch_size', '64', '-p', 'model_name', 'smoke']
DRIFT = ['-f', 'params/drift-quickstart.yaml', '-p', 'model_name', 'smoke', '-p', 'sample_size', '150', '-p', 'permutations', '200',
         '-p', 'robustness_n', '70']
CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')


@pytest.fixture
def trained(site):
    p = facemood('run', 'train', *TRAIN, env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    return site


def drift_runs(site):
    return sorted((Path(site['FACEMOOD_OUTPUTS_DIR']) / 'drift').glob('*/run.json'))


def errors_in(notebook):
    nb = nbformat.read(notebook, as_version=4)
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']


def write_log(url, n, t0, seed=0, brightness=1.0, model='smoke', crops=False):
    "`n` prediction rows, one second apart from `t0`, written by the service's own log writer (with face crops if `crops`)."
    from facemood.predlog import PredictionLog
    from facemood.synth import render_faces
    faces = np.clip(render_faces(n, seed=seed)[0] * brightness, 0, 255).astype(np.uint8)
    log = PredictionLog(url, retention_days=0, log_crops=crops).start()
    log.write([dict(ts=t0 + i, model=model, model_version=1, image_width=320, image_height=240, box_x=10, box_y=10, box_w=100,
                    box_h=100, prediction='happy', confidence=0.5, probs={c: 1 / 7 for c in CLASSES}, face=f) for i, f in enumerate(faces)])
    log.flush()
    log.close()


def test_synthetic_shift_then_log(trained, tmp_path):
    site = trained
    p = facemood('run', 'drift', *DRIFT, env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    [rj] = drift_runs(site)
    d = rj.parent
    rec, met = json.loads(rj.read_text()), json.loads((d / 'metrics.json').read_text())
    assert rec['status'] == 'completed' and rec['data']['fingerprint']
    assert met['verdict'] == 'drift' and met['drift'] == 1, 'darker and blurrier synthetic faces are a strong shift'
    assert 0 <= met['p_ks_brightness'] <= 1 and 'p_mmd_embedding' in met and 'p_chi2_predicted' in met
    assert len(met['robustness']) == 35 and set(met['tolerated']) == {'brightness', 'contrast', 'blur', 'noise', 'occlusion', 'rotation', 'jpeg'}
    html = (d / 'report.html').read_text()
    assert 'Verdict: <b>drift</b>' in html and 'data:image/png;base64,' in html
    assert {'features.png', 'classes.png', 'embeddings.png', 'robustness.png'} <= {f.name for f in (d / 'figures').iterdir()}
    assert not errors_in(d / 'drift.ipynb')

    from facemood.drift import latest_drift_report
    latest = latest_drift_report(site['FACEMOOD_OUTPUTS_DIR'])
    assert latest['verdict'] == 'drift' and latest['run_id'] == rec['id'] and Path(latest['report']).exists()

    # a log as the service writes it by default, without face crops: every test but the embedding's, from the stored columns
    url = f"sqlite:///{tmp_path / 'predictions.sqlite'}"
    t0 = time.time() - 3600
    write_log(url, 120, t0, seed=5)
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', url, '-p', 'robustness', 'false', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    rj = max(drift_runs(site), key=lambda f: json.loads(f.read_text())['started'])
    met = json.loads((rj.parent / 'metrics.json').read_text())
    assert met['n_current'] == 120 and met['verdict'] in ('drift', 'no drift') and 'p_ks_brightness' in met
    assert 'face_size' in met['skipped'], 'crops in the training cache have no face size'
    assert 'embedding' in met['skipped'] and 'p_mmd_embedding' not in met and {'p_ks_sharpness', 'p_chi2_predicted'} <= set(met)
    html = (rj.parent / 'report.html').read_text()
    assert 'embedding test (MMD) is skipped' in html and '0 of the 120 rows kept a face crop' in html
    figs = {f.name for f in (rj.parent / 'figures').iterdir()}
    assert 'features.png' in figs and 'current_samples.png' not in figs and 'embeddings.png' not in figs
    assert not errors_in(rj.parent / 'drift.ipynb')

    # a log with face crops: the model recomputes every feature from them, embedding included
    crops_url = f"sqlite:///{tmp_path / 'crops.sqlite'}"
    write_log(crops_url, 120, t0, seed=5, crops=True)
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', crops_url, '-p', 'robustness', 'false', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    rj = max(drift_runs(site), key=lambda f: json.loads(f.read_text())['started'])
    met_crops = json.loads((rj.parent / 'metrics.json').read_text())
    assert met_crops['n_current'] == 120 and 'p_mmd_embedding' in met_crops and 'embedding' not in met_crops['skipped']
    assert {'current_samples.png', 'embeddings.png'} <= {f.name for f in (rj.parent / 'figures').iterdir()}
    assert 'face crop' not in (rj.parent / 'report.html').read_text()
    assert met_crops['p_ks_brightness'] == met['p_ks_brightness'], 'stored statistics are the ones recomputed from the crops'

    # two windows of the log: the later one darker; face size is known on both sides and tested
    write_log(url, 120, t0 + 200, seed=6, brightness=0.6)
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', url, '-p', 'reference', 'log', '-p', 'reference_until',
                 t0 + 150, '-p', 'log_since', t0 + 150, '-p', 'robustness', 'false', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    rj = max(drift_runs(site), key=lambda f: json.loads(f.read_text())['started'])
    met = json.loads((rj.parent / 'metrics.json').read_text())
    assert met['n_reference'] == met['n_current'] == 120 and 'p_ks_face_size' in met and met['verdict'] == 'drift' and 'brightness' in met['drifted']
    assert 'embedding' in met['skipped'], 'neither window kept crops'

    # an empty window: a clear message, no traceback
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', url, '-p', 'log_since', '2001-01-01T00:00',
                 '-p', 'log_until', '2001-01-02T00:00', env=site)
    assert p.returncode == 2 and 'Traceback' not in p.stderr
    assert 'EmptyWindow' in p.stderr and 'no faces' in p.stderr and 'widen log_since/log_until' in p.stderr

    # a log written by a model with other classes
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    from facemood.predlog import PredictionLog
    log = PredictionLog(other, retention_days=0).start()
    from facemood.synth import render_faces
    log.write([dict(ts=t0 + i, model='smoke', model_version=1, prediction='cat', confidence=1.0, probs={'cat': 1.0, 'dog': 0.0}, face=f)
               for i, f in enumerate(render_faces(5, seed=1)[0])])
    log.flush(); log.close()
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', other, env=site)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and 'ClassMismatch' in p.stderr and "differ from the model's" in p.stderr

    # the training data is gone (cache deleted, its source not available): a clear message
    for f in (Path(site['FACEMOOD_DATA_DIR']) / 'cache').glob('*.npz'): f.unlink()
    reg = Path(site['FACEMOOD_REGISTRY_DIR']) / 'smoke' / 'v1' / 'card.json'
    card = json.loads(reg.read_text())
    card['data']['source'] = 'fer2013'
    reg.write_text(json.dumps(card))
    p = facemood('run', 'drift', *DRIFT, env=site)
    assert p.returncode == 2 and 'Traceback' not in p.stderr
    assert 'ReferenceUnavailable' in p.stderr and 'cannot be rebuilt' in p.stderr


def test_drift_on_what_the_service_logged(trained, tmp_path):
    "The whole loop: the real service logs its predictions, then the drift runbook reads that log."
    import cv2
    import httpx

    from facemood.app import serve_in_background
    from facemood.predlog import count_prediction_log
    from facemood.synth import render_faces
    site = trained
    url = f"sqlite:///{tmp_path / 'served.sqlite'}"
    faces, _ = render_faces(160, seed=11)
    with serve_in_background('smoke', registry=site['FACEMOOD_REGISTRY_DIR'], log_url=url, env=dict(site, FACEMOOD_RATE_LIMIT='0')) as srv:  # 160 requests at once
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for f in faces:
                r = c.post('/predict', params={'detect': 'false'}, files={'file': ('face.png', cv2.imencode('.png', f)[1].tobytes())})
                assert r.status_code == 200, r.text
    assert count_prediction_log(url) == 160, 'one row per prediction, flushed at shutdown'
    p = facemood('run', 'drift', *DRIFT, '-p', 'current', 'log', '-p', 'log_url', url, '-p', 'robustness', 'false', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    [rj] = drift_runs(site)
    met = json.loads((rj.parent / 'metrics.json').read_text())
    assert 0 < met['n_current'] <= 160 and met['verdict'] in ('drift', 'no drift')
    # the service keeps no face crops by default: the tests come from the statistics and model outputs it logged
    assert {'p_ks_brightness', 'p_ks_sharpness', 'p_ks_confidence', 'p_chi2_predicted'} <= set(met)
    assert 'embedding' in met['skipped'] and 'p_mmd_embedding' not in met
    assert (rj.parent / 'report.html').exists()


def test_few_false_alarms_on_unseen_faces(site):
    """Issue 19: unseen faces of the training population, against the reference the runbook takes (its defaults and
    params/drift-quickstart.yaml), get the verdict `drift` in at most 10% of 20 repetitions (alpha 0.05, 300 current faces)."""
    from facemood.drift import detector_quality, population_features, reference_data
    from facemood.predictor import Predictor
    from facemood.runs import find_runbook, runbook_parameters
    from facemood.synth import render_faces
    p = facemood('run', 'train', '-f', 'params/base.yaml', '-f', 'params/quickstart.yaml', '-p', 'synthetic_n', '3000',
                 '-p', 'max_epochs', '1', '-p', 'model_name', 'fa', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    params = {k: v.default for k, v in runbook_parameters(find_runbook('drift')).items()}
    params.update(yaml.safe_load((ROOT / 'params' / 'drift-quickstart.yaml').read_text()))
    assert params['reference'] == 'training'
    model = Predictor('fa', registry=site['FACEMOOD_REGISTRY_DIR'])
    assert model.card.get('ood'), 'the model has out-of-distribution statistics, so the report tests ood_score'
    data = reference_data(model.card, data_dir=site['FACEMOOD_DATA_DIR'])
    ref = population_features(data.get(params['reference_split'])[0], model)
    unseen = population_features(render_faces(3000, seed=20190)[0], model)  # the training population, faces never seen
    q = detector_quality(ref, unseen, n=300, n_reference=min(params['reference_size'], len(ref['brightness'])), repetitions=20,
                         alpha=params['alpha'], seed=params['seed'], classes=list(model.card['classes']), permutations=params['permutations'])
    assert q['rate'] <= 0.10, (f"{q['rate']:.0%} of 20 verdicts say drift between unseen faces of the training population and "
                               f"the {params['reference_split']!r} split; tests that fired: {q['drifted_by_feature']}")

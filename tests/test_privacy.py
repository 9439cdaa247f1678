"""Privacy by default in the prediction log: no face crops unless asked for, crops erased after their retention, erasure
by request id or date that leaves no trace of the rows in the SQLite file or its write-ahead log, and drift analysis from a
log without crops."""
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemood.drift import current_from_log
from facemood.predlog import (LogEraseIncomplete, PredictionLog, count_prediction_log, decode_crop, delete_predictions, face_stats,
                              prediction_log_info, read_prediction_log)
from facemood.settings import FacemoodError

CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')


def face(seed):
    "A 48x48 face of noise: its PNG bytes occur nowhere else."
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def row(request_id, ts=None, seed=0, **kw):
    "A row as the service writes it."
    p = np.random.default_rng(seed).dirichlet(np.ones(len(CLASSES)))
    return dict(ts=time.time() if ts is None else ts, request_id=request_id, endpoint='/predict', model='m', model_version=1, image_index=0,
                face_index=0, n_faces=1, image_width=320, image_height=240, box_x=10, box_y=10, box_w=120, box_h=120,
                prediction=CLASSES[int(p.argmax())], confidence=float(p.max()), probs=dict(zip(CLASSES, p.tolist())), ood_score=1.0,
                in_distribution=True, face=face(seed), **kw)


def png_of(seed):
    return cv2.imencode('.png', face(seed))[1].tobytes()


def raw_rows(db):
    with sqlite3.connect(db) as c:
        return {rid: (crop, b) for rid, crop, b in c.execute('SELECT request_id, crop_png, brightness FROM predictions')}


def files_holding(db: Path, data: bytes) -> list:
    "Which of the database file and its write-ahead log hold `data` (a slice of a PNG: a crop's bytes)."
    return [p.name for p in (db, Path(f'{db}-wal')) if p.exists() and data in p.read_bytes()]


@pytest.fixture
def db(tmp_path):
    return tmp_path / 'predictions.sqlite'


def test_default_log_keeps_statistics_not_faces(db):
    log = PredictionLog(f'sqlite:///{db}').start()
    log.write([row('a', seed=1), row('b', seed=2)])
    log.close()
    raw = raw_rows(db)
    assert set(raw) == {'a', 'b'} and all(crop is None for crop, _ in raw.values()), 'no crop stored by default'
    assert raw['a'][1] == face_stats(face(1))['brightness']
    assert not files_holding(db, png_of(1)[100:400]) and not files_holding(db, png_of(2)[100:400])
    rows = read_prediction_log(f'sqlite:///{db}')
    assert [r['crop'] for r in rows] == [None, None] and all(0 < r['contrast'] and r['sharpness'] > 0 for r in rows)


def test_log_crops_stores_them(db):
    log = PredictionLog(f'sqlite:///{db}', log_crops=True).start()
    log.write([row('a', seed=1)])
    log.close()
    crop, _ = raw_rows(db)['a']
    assert crop == png_of(1) and (decode_crop(crop) == face(1)).all()
    assert (read_prediction_log(f'sqlite:///{db}')[0]['crop'] == face(1)).all()


def test_crop_retention_erases_crops_keeps_rows(db):
    now = time.time()
    log = PredictionLog(f'sqlite:///{db}', log_crops=True, retention_days=30, crop_retention_days=7).start()
    log.write([row('old', now - 8 * 86400, seed=1), row('new', now - 6 * 86400, seed=2), row('gone', now - 31 * 86400, seed=3)])
    log.flush()
    assert files_holding(db, png_of(1)[100:400]), 'the crop is on disk before the purge'
    assert log.purge() == dict(rows=1, crops=1)
    raw = raw_rows(db)
    assert set(raw) == {'old', 'new'} and raw['old'][0] is None and raw['new'][0] == png_of(2)
    assert raw['old'][1] == face_stats(face(1))['brightness'], 'the row keeps its statistics'
    assert not files_holding(db, png_of(1)[100:400]) and not files_holding(db, png_of(3)[100:400]), 'erased bytes are overwritten'
    log.close()
    # 0: crops live as long as their rows
    log = PredictionLog(f'sqlite:///{db}', log_crops=True, retention_days=30, crop_retention_days=0).start()
    assert log.purge() == dict(rows=0, crops=0) and raw_rows(db)['new'][0] == png_of(2)
    log.close()


def test_delete_by_request_id_and_date_leaves_no_bytes(db):
    url, now = f'sqlite:///{db}', time.time()
    log = PredictionLog(url, log_crops=True, retention_days=0).start()   # stays open: its connection keeps the WAL file
    log.write([row('keep', now, seed=1), row('erase', now, seed=2), row('erase', now, seed=3), row('old', now - 100 * 86400, seed=4),
               row('keep-too', now - 10 * 86400, seed=5)])
    log.flush()
    assert Path(f'{db}-wal').exists() and files_holding(db, png_of(2)[100:400]) and files_holding(db, png_of(4)[100:400])

    assert delete_predictions(url, request_ids=['erase', 'nobody']) == 2
    assert set(raw_rows(db)) == {'keep', 'old', 'keep-too'}
    assert files_holding(db, png_of(2)[100:400]) == [] and files_holding(db, png_of(3)[100:400]) == []
    assert files_holding(db, png_of(1)[100:400]), 'the rows kept keep their crops'

    assert delete_predictions(url, before=now - 50 * 86400) == 1
    assert set(raw_rows(db)) == {'keep', 'keep-too'} and files_holding(db, png_of(4)[100:400]) == []
    assert delete_predictions(url, 'keep', before='2001-01-01T00:00') == 1 and set(raw_rows(db)) == {'keep-too'}
    log.close()
    assert count_prediction_log(url) == 1

    with pytest.raises(FacemoodError, match='needs request ids'): delete_predictions(url)
    with pytest.raises(FacemoodError, match='bad date'): delete_predictions(url, before='yesterday')
    with pytest.raises(FacemoodError, match='no prediction log at'): delete_predictions(f"sqlite:///{db.with_name('none.sqlite')}", ['x'])
    assert not db.with_name('none.sqlite').exists()


def test_erasure_held_up_by_a_reader_says_so_and_completes_when_run_again(db, monkeypatch):
    import facemood.predlog as predlog
    checkpoint = predlog._checkpoint
    monkeypatch.setattr(predlog, '_checkpoint', lambda eng, wait_ms=30000: checkpoint(eng, 200))   # wait 0.2 s for readers, not 30
    url = f'sqlite:///{db}'
    log = PredictionLog(url, log_crops=True).start()
    log.write([row('a', seed=1), row('b', seed=2)])
    log.flush()
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute('BEGIN')
    reader.execute('SELECT count(*) FROM predictions').fetchone()   # a read transaction pins the WAL
    with pytest.raises(LogEraseIncomplete, match='run the same deletion again'): delete_predictions(url, ['a'])
    reader.execute('COMMIT')
    reader.close()
    assert 'a' not in raw_rows(db), 'the rows are deleted all the same'
    assert delete_predictions(url, ['a']) == 0 and files_holding(db, png_of(1)[100:400]) == []
    log.close()


def test_log_info(db):
    url, now = f'sqlite:///{db}', time.time()
    log = PredictionLog(url, retention_days=0).start()
    log.write([row('a', now - 3600, seed=1), row('a', now, seed=2), row('b', now, seed=3)])
    log.close()
    log = PredictionLog(url, retention_days=0, log_crops=True).start()
    log.write([row('c', now + 1, seed=4)])
    log.close()
    info = prediction_log_info(url)
    assert (info['url'], info['rows'], info['crops'], info['request_ids'], info['models']) == (url, 4, 1, 3, {'m:v1': 4})
    assert info['oldest'] < info['newest'] and info['newest'].endswith('+00:00')


def test_drift_features_from_a_log_without_crops(db):
    url = f'sqlite:///{db}'
    rows = [row(f'r{i}', 1.7e9 + i, seed=i) for i in range(20)]
    log = PredictionLog(url, retention_days=0).start()
    log.write(rows)
    log.close()
    cur = current_from_log(url, classes=list(CLASSES))
    f = cur['features']
    assert cur['images'] is None and (cur['n_rows'], cur['n_crops'], cur['served']) == (20, 0, ['m:v1'])
    assert 'embedding' not in f and f['predicted'].tolist() == [CLASSES.index(r['prediction']) for r in rows]
    assert f['brightness'].tolist() == [face_stats(r['face'])['brightness'] for r in rows]
    assert np.allclose(f['face_size'], 0.5) and np.allclose(f['confidence'], [r['confidence'] for r in rows])

    log = PredictionLog(url, retention_days=0, log_crops=True).start()   # one row with a crop: the window is still not all crops
    log.write([row('with-crop', 1.7e9 + 100, seed=99)])
    log.close()
    assert current_from_log(url)['images'] is None and current_from_log(url)['n_crops'] == 1
    with_crops = current_from_log(url, since=1.7e9 + 50)
    assert with_crops['images'].shape == (1, 48, 48) and (with_crops['images'][0] == face(99)).all()

"""`facemood predict` on videos and on folders with broken files, as a user runs it."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
from serve_fixtures import *  # noqa: F403  (fixture: registry_dir)

from conftest import facemood
from facemood.detect_bench import portrait_tiles
from facemood.images import sample_face
from facemood.synth import render_faces


def two_people_video(path: Path, n: int = 16, size=(640, 360), fps: float = 8.0) -> list:
    "Grace Hopper walking right and the astronaut walking left, crossing no one; returns each frame's true face boxes [hopper, astronaut]."
    tiles = portrait_tiles(True)[:2]   # (tile, (x, y, side)) with hair, shoulders and background
    scaled = []
    for tile, (bx, by, bs) in tiles:
        s = 96/bs
        scaled.append((cv2.resize(tile, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), (round(bx*s), round(by*s))))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, size)
    truth = []
    for i in range(n):
        frame, boxes = np.full((size[1], size[0], 3), 100, np.uint8), []
        for (t, (fx, fy)), (x0, y0) in zip(scaled, [(20 + 6*i, 60), (420 - 6*i, 110)]):
            h, w = t.shape[:2]
            frame[y0:y0 + h, x0:x0 + w] = t[:size[1] - y0, :size[0] - x0]
            boxes.append((x0 + fx, y0 + fy, 96, 96))
        vw.write(frame); truth.append(boxes)
    vw.release()
    return truth


def env_for(site, registry_dir):
    return dict(site, FACEMOOD_REGISTRY_DIR=str(registry_dir))


def test_video_faces_keep_their_ids(tmp_path, site, registry_dir):
    truth = two_people_video(tmp_path / 'walk.avi')
    r = facemood('predict', tmp_path / 'walk.avi', '--out', tmp_path / 'walk.jsonl', '--every', '2', '--annotate', tmp_path / 'ann',
                 env=env_for(site, registry_dir), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / 'walk.jsonl').read_text().splitlines()]
    assert sorted({x['frame'] for x in rows}) == list(range(0, 16, 2))
    assert [x['time_s'] for x in rows if x['frame'] == 4][0] == 0.5
    assert len(rows) == 16, rows                                  # both faces in each of the 8 frames read
    ids = {}
    for x in rows:   # who is it? the true face its box overlaps (the people never come near each other)
        b = x['box']
        who = min(range(2), key=lambda k: abs(truth[x['frame']][k][0] + 48 - (b['x'] + b['w']/2)))
        ids.setdefault(who, set()).add(x['face_id'])
        assert set(x['probs']) == set(['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']) and 'ood_score' in x and 'in_distribution' in x
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1], ids   # one stable id per person
    assert len(list((tmp_path / 'ann' / 'walk').glob('frame_*.jpg'))) == 8
    assert (tmp_path / 'ann' / 'walk_emotions.png').stat().st_size > 1000
    assert '2 face ids in 8 frames' in r.stdout, r.stdout


def test_bad_files_are_reported_and_skipped(tmp_path, site, registry_dir):
    d = tmp_path / 'in'
    (d / 'sub').mkdir(parents=True)
    (d / 'hopper.jpg').write_bytes(sample_face('photo'))
    (d / 'empty.png').write_bytes(b'')
    (d / 'text.jpg').write_text('hello, not a photo')
    (d / 'sub' / 'truncated.jpg').write_bytes(sample_face('photo')[:3000])
    (d / 'sub' / 'fake.mp4').write_bytes(b'\0' * 4096)
    (d / 'notes.txt').write_text('ignored: not an image or video extension')
    r = facemood('predict', d, tmp_path / 'missing.jpg', '--out', tmp_path / 'out.csv', env=env_for(site, registry_dir), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / 'out.csv')))
    assert [Path(x['file']).name for x in rows] == ['hopper.jpg']
    out = r.stdout
    assert 'skipped 5 files' in out, out
    for name, why in [('empty.png', 'empty file'), ('text.jpg', 'not an image'), ('truncated.jpg', 'truncated'),
                      ('fake.mp4', 'OpenCV cannot open this video'), ('missing.jpg', 'no such file or folder')]:
        line = next((x for x in out.splitlines() if name in x), '')
        assert why in line, (name, out)
    assert 'notes.txt' not in out


def test_out_must_be_csv_or_jsonl(tmp_path, site, registry_dir):
    (tmp_path / 'hopper.jpg').write_bytes(sample_face('photo'))
    r = facemood('predict', tmp_path / 'hopper.jpg', '--out', tmp_path / 'out.xlsx', env=env_for(site, registry_dir))
    assert r.returncode == 2 and 'give a file name ending in .csv or .jsonl' in r.stderr, r.stderr
    assert not (tmp_path / 'out.xlsx').exists()


def test_face_crops_get_a_note_pointing_to_no_detect(tmp_path, site, registry_dir):
    d = tmp_path / 'crops'
    d.mkdir()
    (d / 'hopper.png').write_bytes(sample_face('crop'))
    for i, face in enumerate(render_faces(7, seed=1)[0]): cv2.imwrite(str(d / f'synthetic-{i}.png'), face)
    env = env_for(site, registry_dir)
    r = facemood('predict', d, '--model', 'demo', env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    notes = [x for x in r.stderr.splitlines() if x.startswith('facemood: note: ')]
    assert len(notes) == 1 and notes[0].startswith('facemood: note: 8 of 8 images are under 100 px') and '--no-detect' in notes[0], r.stderr
    r = facemood('predict', d, '--no-detect', '--model', 'demo', env=env, timeout=300)
    assert r.returncode == 0 and 'note' not in r.stderr and r.stdout.startswith('8 images: 8 faces'), r.stdout + r.stderr
    (tmp_path / 'hopper.jpg').write_bytes(sample_face('photo'))   # a real photo, 640x480, with a face
    r = facemood('predict', tmp_path / 'hopper.jpg', '--model', 'demo', env=env, timeout=300)
    assert r.returncode == 0 and 'note' not in r.stderr and '1 face' in r.stdout, r.stdout + r.stderr


def test_the_shipped_model_answers_a_real_photo(tmp_path, site):
    "Right after install, with an empty registry: `facemood predict` on a photo uses the FER2013 model that ships with facemood."
    (tmp_path / 'hopper.jpg').write_bytes(sample_face('photo'))
    p = facemood('predict', tmp_path / 'hopper.jpg', '--out', tmp_path / 'faces.jsonl', env=site)
    assert p.returncode == 0, p.stderr[-2000:]
    assert '1 image: 1 face' in p.stdout and 'model fer2013-cpu:v1' in p.stdout, p.stdout
    [row] = [json.loads(line) for line in (tmp_path / 'faces.jsonl').read_text().splitlines()]
    assert row['in_distribution'] is True and abs(sum(row['probs'].values()) - 1) < 1e-5
    p = facemood('predict', tmp_path / 'hopper.jpg', '--model', 'nobody', env=site)
    assert p.returncode != 0 and "no model 'nobody'" in p.stderr

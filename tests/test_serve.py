"""The service as clients see it: a real uvicorn on 127.0.0.1, real HTTP, the prediction log on disk."""
import json
import time
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_fixtures import *  # noqa: F403  (fixtures: registry_dir, server)
from serve_fixtures import CLASSES, MAX_UPLOAD_MB, encode, server_env, smooth_image, two_faces_photo

from facemood.app import serve_in_background
from facemood.evaluate import predict_probs
from facemood.export import load_model
from facemood.images import preprocess_face, read_image, sample_face
from facemood.predictor import Predictor
from facemood.predlog import decode_crop, read_prediction_log
from facemood.registry import Registry

CROP, PHOTO = sample_face('crop'), sample_face('photo')


@pytest.fixture(scope='module')
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope='module')
def torch_model(registry_dir):
    return load_model('demo', registry=Registry(registry_dir))


@pytest.fixture(scope='module')
def predictor(registry_dir):
    return Predictor('demo', registry=registry_dir)


def post(client, data, name='upload.png', detect=False):
    return client.post(f'/predict?detect={str(detect).lower()}', files={'file': (name, data)})


def probs_of(face):
    return np.array(list(face['probs'].values()))


def reference_probs(torch_model, faces):
    "What the evaluation code says for preprocessed faces (N,48,48)."
    net, card = torch_model
    return predict_probs(net, np.array(faces), card['input']['mean'], card['input']['std'])


def assert_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {'error', 'message', 'request_id'} and body['request_id'] == r.headers['x-request-id']
    for w in words: assert w in body['message'], body['message']
    return body


# --- endpoints -------------------------------------------------------------------------------------------------

def test_health_and_model(client):
    h = client.get('/health').json()
    assert h['ready'] is True and (h['model'], h['model_version'], h['runtime']) == ('demo', 1, 'onnxruntime')
    assert h['classes'] == CLASSES
    card = client.get('/model').json()
    assert (card['name'], card['version'], card['classes']) == ('demo', 1, CLASSES)
    assert (card['input']['size'], card['input']['mean'], card['input']['std']) == (48, 0.5, 0.5)
    assert h['ood'] is True and card['ood']['file'] == 'ood.npz' and card['ood']['threshold'] > 0
    assert card['use']['warning'].startswith('This model is untrained') and card['use']['out_of_scope']


def test_web_page_and_static_files(client):
    r = client.get('/')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/html')
    assert 'static/app.js' in r.text and 'static/style.css' in r.text
    js = client.get('/static/app.js')
    assert js.status_code == 200 and 'getUserMedia' in js.text and 'predict?detect=' in js.text
    assert client.get('/static/style.css').status_code == 200


def test_openapi_describes_requests_and_responses(client):
    spec = client.get('/openapi.json').json()
    assert {'/health', '/model', '/predict', '/predict/batch', '/metrics'} <= set(spec['paths'])
    op = spec['paths']['/predict']['post']
    schema_ref = op['requestBody']['content']['multipart/form-data']['schema']['$ref']
    body = spec['components']['schemas'][schema_ref.split('/')[-1]]
    f = body['properties']['file']
    assert body['required'] == ['file'] and f['type'] == 'string'
    assert f.get('format') == 'binary' or f.get('contentMediaType') == 'application/octet-stream', f  # OpenAPI 3.0 / 3.1 spelling
    assert [p['name'] for p in op['parameters']] == ['detect']
    assert op['responses']['200']['content']['application/json']['schema']['$ref'].endswith('/Prediction')
    assert op['responses']['413']['content']['application/json']['schema']['$ref'].endswith('/ErrorResponse')
    schemas = spec['components']['schemas']
    assert {'Prediction', 'BatchPrediction', 'Face', 'Box', 'Timings', 'Health', 'ErrorResponse'} <= set(schemas)
    assert {'box', 'emotion', 'confidence', 'probs', 'in_distribution', 'ood_score'} <= set(schemas['Face']['properties'])
    batch = spec['paths']['/predict/batch']['post']['requestBody']['content']['multipart/form-data']['schema']['$ref']
    assert spec['components']['schemas'][batch.split('/')[-1]]['properties']['files']['type'] == 'array'
    docs = client.get('/docs')
    assert docs.status_code == 200 and 'swagger' in docs.text.lower()


def test_docs_need_no_cdn(client):
    "/docs and /redoc name only files the server serves itself (tests/test_webpage.py renders them with the network cut)."
    import re
    for page, files in (('/docs', ('swagger-ui-bundle.js', 'swagger-ui.css')), ('/redoc', ('redoc.standalone.js',))):
        r = client.get(page)
        html = r.text
        assert not re.search(r'(src|href)=["\']?(https?:)?//', html), html
        assert "img-src 'self' data:" in r.headers['content-security-policy']
        for f in files:
            assert f'/docs-assets/{f}' in html
            r = client.get(f'/docs-assets/{f}')
            assert r.status_code == 200 and len(r.content) > 10_000, f


def test_predict_crop(client):
    r = post(client, CROP, 'crop.png')
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out['model'], out['model_version'], out['width'], out['height']) == ('demo', 1, 48, 48)
    assert len(out['faces']) == 1
    f = out['faces'][0]
    assert f['box'] == dict(x=0, y=0, w=48, h=48)
    assert list(f['probs']) == CLASSES
    assert abs(sum(f['probs'].values()) - 1) < 1e-6 and all(0 <= p <= 1 for p in f['probs'].values())
    assert f['emotion'] == max(f['probs'], key=f['probs'].get) and f['confidence'] == f['probs'][f['emotion']]
    assert isinstance(f['in_distribution'], bool) and isinstance(f['ood_score'], float)
    assert set(out['timings']) == {'decode_ms', 'detect_ms', 'infer_ms', 'log_ms', 'total_ms'}
    assert out['request_id'] == r.headers['x-request-id']


def test_request_id_from_client_is_kept(client):
    r = client.post('/predict?detect=false', files={'file': ('c.png', CROP)}, headers={'X-Request-ID': 'trace-42'})
    assert r.json()['request_id'] == 'trace-42' == r.headers['x-request-id']


def test_same_prediction_as_evaluation_code(client, torch_model):
    "Service probabilities == predict_probs(torch model, preprocess_face(image)) within 1e-4."
    images = {'crop.png': CROP, 'photo.jpg': PHOTO, 'portrait.jpg': sample_face('portrait'),
              'colour.png': encode(smooth_image(90, 120, seed=3), 'PNG')}
    for name, data in images.items():
        got = probs_of(post(client, data, name).json()['faces'][0])
        want = reference_probs(torch_model, preprocess_face(read_image(data), 48)[None])[0]
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)


def test_detection_finds_the_face(client, torch_model):
    out = post(client, PHOTO, 'photo.jpg', detect=True).json()
    assert (out['width'], out['height']) == (640, 480) and len(out['faces']) == 1
    b = out['faces'][0]['box']
    assert b['w'] == b['h'] and 100 < b['w'] < 260
    assert 250 < b['x'] + b['w'] / 2 < 390 and 120 < b['y'] + b['h'] / 2 < 260  # the portrait's face, in photo pixels
    # the crop is preprocess_face of that box of the decoded image
    gray = np.asarray(read_image(PHOTO).convert('L'))[b['y']:b['y'] + b['h'], b['x']:b['x'] + b['w']]
    want = reference_probs(torch_model, preprocess_face(gray, 48)[None])[0]
    np.testing.assert_allclose(probs_of(out['faces'][0]), want, atol=1e-4)


def test_several_faces_each_with_its_flag(client, predictor):
    "A photo with two faces: two entries, each with its box, probabilities, out-of-distribution score and flag, as the predictor says."
    from facemood.faces import find_faces
    photo = two_faces_photo()
    out = post(client, photo, 'two.jpg', detect=True).json()
    assert (out['width'], out['height']) == (960, 480) and len(out['faces']) == 2
    assert sorted(f['box']['x'] < 480 for f in out['faces']) == [False, True]   # one face in each half
    want = predictor.predict(find_faces(photo).faces)
    for k, f in enumerate(out['faces']):
        assert set(f) == {'box', 'emotion', 'confidence', 'probs', 'in_distribution', 'ood_score'}
        assert f['in_distribution'] is bool(want['in_distribution'][k]) and f['in_distribution'] is (f['ood_score'] <= predictor.ood.threshold)
        np.testing.assert_allclose(f['ood_score'], want['ood_score'][k], rtol=1e-6)
        np.testing.assert_allclose(probs_of(f), want['probs'][k], atol=1e-6)


def test_no_face_is_an_empty_list(client):
    for data in (encode(Image.new('RGB', (640, 480), (120, 130, 140)), 'JPEG'), encode(smooth_image(), 'PNG')):
        r = post(client, data, 'blank.jpg', detect=True)
        assert r.status_code == 200 and r.json()['faces'] == []


def test_batch_infers_all_faces(client, torch_model):
    files = [('files', ('crop.png', CROP)), ('files', ('photo.jpg', PHOTO)), ('files', ('notes.txt', b'just text')),
             ('files', ('blank.png', encode(Image.new('L', (200, 200), 90), 'PNG')))]
    r = client.post('/predict/batch?detect=true', files=files)
    assert r.status_code == 200, r.text
    res = r.json()['results']
    assert [x['filename'] for x in res] == ['crop.png', 'photo.jpg', 'notes.txt', 'blank.png']
    assert [len(x['faces']) for x in res] == [0, 1, 0, 0]  # a 48x48 crop is too small for the detector
    assert 'notes.txt: not an image' in res[2]['error'] and res[0]['error'] is None
    single = post(client, PHOTO, 'photo.jpg', detect=True).json()['faces'][0]
    np.testing.assert_allclose(probs_of(res[1]['faces'][0]), probs_of(single), atol=1e-6)
    r = client.post('/predict/batch?detect=false', files=[('files', ('a.png', CROP)), ('files', ('b.jpg', PHOTO))])
    faces = [x['faces'][0] for x in r.json()['results']]
    want = reference_probs(torch_model, np.stack([preprocess_face(read_image(d)) for d in (CROP, PHOTO)]))
    np.testing.assert_allclose(np.stack([probs_of(f) for f in faces]), want, atol=1e-4)


def test_metrics(client):
    post(client, CROP, 'c.png')
    for _ in range(100):  # the log writer counts its rows when its batch is written, off the request path
        text = client.get('/metrics')
        if 'facemood_prediction_log_rows_total{outcome="written"}' in text.text: break
        time.sleep(0.1)
    assert text.headers['content-type'].startswith('text/plain')
    t = text.text
    for family in ('facemood_requests_total{endpoint="/predict",method="POST",status="200"}',
                   'facemood_request_duration_seconds_bucket{endpoint="/predict",le="0.01"}',
                   'facemood_stage_duration_seconds_bucket{le="0.005",stage="infer"}',
                   'facemood_predictions_total{emotion=', 'facemood_prediction_confidence_bucket{le="0.5"}',
                   'facemood_faces_per_image_bucket{le="1.0"}', 'facemood_prediction_log_rows_total{outcome="written"}',
                   'facemood_model_info{model="demo",runtime="onnxruntime",version="1"} 1.0'):
        assert family in t, family


# --- bad input: a 4xx with a JSON message, or 200 with no face; never a 500 ----------------------------------------

def test_not_an_image(client):
    assert_error(post(client, b'%PDF-1.7\n this is a document', 'report.pdf'), 400, 'report.pdf', 'not an image')


def test_corrupt_and_truncated(client):
    jpg, png = encode(smooth_image(), 'JPEG'), encode(smooth_image(), 'PNG')
    assert_error(post(client, jpg[:len(jpg) // 2], 'cut.jpg'), 400, 'cut.jpg', 'corrupt or truncated')
    assert_error(post(client, png[:200], 'cut.png'), 400, 'cut.png', 'corrupt or truncated')
    garbled = png[:60] + bytes(range(256)) * 4 + png[60 + 1024:]
    assert_error(post(client, garbled, 'garbled.png'), 400, 'garbled.png')


def test_empty_file_and_empty_body(client):
    assert_error(post(client, b'', 'empty.png'), 400, 'empty.png', 'empty')
    assert_error(client.post('/predict', content=b''), 422, "field 'file'")
    assert_error(client.post('/predict', files={'image': ('a.png', CROP)}), 422, "field 'file'")
    assert_error(client.post('/predict', json={'file': 'a.png'}), 422, "field 'file'")
    assert_error(client.post('/predict/batch', content=b''), 422, "field 'files'")


def test_bad_query_parameter(client):
    assert_error(client.post('/predict?detect=perhaps', files={'file': ('a.png', CROP)}), 422, 'detect')


def test_oversized_upload(client):
    big = b'\xff\xd8\xff' + b'\0' * int(MAX_UPLOAD_MB * 1e6 + 1000)
    assert_error(post(client, big, 'huge.jpg'), 413, f'{MAX_UPLOAD_MB} MB', 'FACEMOOD_MAX_UPLOAD_MB')

    def chunks():  # no Content-Length: the server counts the bytes as they come
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="huge.jpg"\r\n\r\n'
        for _ in range(MAX_UPLOAD_MB * 10 + 5): yield b'\0' * 100_000
        yield b'\r\n--B--\r\n'
    r = client.post('/predict', content=chunks(), headers={'content-type': 'multipart/form-data; boundary=B'})
    assert_error(r, 413, 'FACEMOOD_MAX_UPLOAD_MB')


def test_decompression_bomb(client):
    bomb = encode(Image.new('L', (8000, 6000)), 'PNG')  # 48 Mpx in ~50 kB
    assert len(bomb) < 100_000
    assert_error(post(client, bomb, 'bomb.png'), 400, 'bomb.png', '8000x6000', 'pixels')


@pytest.mark.parametrize('mode', ['CMYK', '16-bit', 'palette', 'RGBA', 'LA', 'palette+transparency', 'grayscale'])
def test_unusual_modes(client, torch_model, mode):
    rgb = smooth_image(90, 120, seed=1)
    im = {'CMYK': lambda: rgb.convert('CMYK'), '16-bit': lambda: Image.fromarray(np.asarray(rgb.convert('L')).astype(np.uint16) * 257),
          'palette': lambda: rgb.convert('P'), 'RGBA': lambda: rgb.convert('RGBA'), 'LA': lambda: rgb.convert('LA'),
          'grayscale': lambda: rgb.convert('L'),
          'palette+transparency': lambda: rgb.convert('P')}[mode]()
    kw = {'palette+transparency': dict(transparency=0)}.get(mode, {})
    data = encode(im, 'TIFF' if mode == 'CMYK' else 'PNG', **kw)
    r = post(client, data, f'{mode}.img')
    assert r.status_code == 200, r.text
    want = reference_probs(torch_model, preprocess_face(read_image(data))[None])[0]
    np.testing.assert_allclose(probs_of(r.json()['faces'][0]), want, atol=1e-4)


def test_animated_image_uses_first_frame(client):
    frames = [smooth_image(seed=s).convert('L') for s in (5, 6)]
    gif = encode(frames[0], 'GIF', save_all=True, append_images=frames[1:], duration=100, loop=0)
    got = probs_of(post(client, gif, 'anim.gif').json()['faces'][0])
    first = probs_of(post(client, encode(frames[0], 'GIF'), 'first.gif').json()['faces'][0])
    second = probs_of(post(client, encode(frames[1], 'GIF'), 'second.gif').json()['faces'][0])
    np.testing.assert_allclose(got, first, atol=1e-6)
    assert np.abs(got - second).max() > 1e-6


def test_exif_orientation_is_honoured(client):
    upright = smooth_image(120, 80, seed=7)                 # portrait, 80 wide, 120 tall
    exif = Image.Exif()
    exif[0x0112] = 6                                          # stored rotated: "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)    # 120 wide, 80 tall on disk
    a = post(client, encode(upright, 'PNG'), 'upright.png').json()
    b = post(client, encode(stored, 'PNG', exif=exif), 'sideways.png').json()
    assert (b['width'], b['height']) == (80, 120) == (a['width'], a['height'])
    np.testing.assert_allclose(probs_of(b['faces'][0]), probs_of(a['faces'][0]), atol=1e-6)


def test_one_pixel_image(client):
    one = encode(Image.new('RGB', (1, 1), (200, 10, 10)), 'PNG')
    r = post(client, one, 'dot.png', detect=False)
    assert r.status_code == 200 and len(r.json()['faces']) == 1 and r.json()['faces'][0]['box'] == dict(x=0, y=0, w=1, h=1)
    r = post(client, one, 'dot.png', detect=True)
    assert r.status_code == 200 and r.json()['faces'] == []


def test_still_serving_and_no_500(client):
    assert client.get('/health').json()['ready'] is True
    assert post(client, CROP).status_code == 200
    assert 'status="500"' not in client.get('/metrics').text


# --- the prediction log ------------------------------------------------------------------------------------------

def test_log_complete_under_concurrent_requests(registry_dir, tmp_path):
    "Every successful prediction is a row, even when many requests arrive at once and the server stops right after (crops opted in)."
    log_url = f"sqlite:///{tmp_path / 'predictions.sqlite'}"
    inputs = [('crop.png', CROP, False), ('photo.jpg', PHOTO, True), ('bad.jpg', b'nonsense', False), ('blank.png', encode(Image.new('L', (64, 64)), 'PNG'), True)]
    faces, ok, lock = [], [], threading.Lock()
    srv = serve_in_background(registry=registry_dir, log_url=log_url, env=server_env(tmp_path, registry_dir, log_crops='true'))
    try:
        def user(k):
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                for i in range(12):
                    name, data, detect = inputs[(k + i) % len(inputs)]
                    r = post(c, data, name, detect)
                    with lock:
                        if r.status_code == 200:
                            ok.append(r.json()['request_id']); faces.extend(r.json()['faces'])
        threads = [threading.Thread(target=user, args=(k,)) for k in range(12)]
        for t in threads: t.start()
        for t in threads: t.join()
    finally:
        code = srv.stop()
    assert code == 0, srv.output()[-2000:]
    rows = read_prediction_log(log_url)
    assert len(ok) == 12 * 12 * 3 // 4 and len(faces) == 12 * 12 // 2   # crops and photos: one face each; blank: none
    assert len(rows) == len(faces)
    assert {r['request_id'] for r in rows} <= set(ok)
    r = next(r for r in rows if r['endpoint'] == '/predict' and r['image_width'] == 640)
    assert (r['model'], r['model_version'], r['n_faces']) == ('demo', 1, 1)
    assert r['crop'].shape == (48, 48) and r['crop'].dtype == np.uint8
    assert decode_crop(next(x for x in read_prediction_log(log_url, decode_crops=False) if x['image_width'] == 48)['crop']).tolist() == \
        preprocess_face(read_image(CROP)).tolist()
    assert abs(sum(r['probs'].values()) - 1) < 1e-6 and r['prediction'] == max(r['probs'], key=r['probs'].get)
    for k in ('brightness', 'contrast', 'sharpness', 'decode_ms', 'detect_ms', 'infer_ms', 'box_w', 'ood_score', 'in_distribution'): assert r[k] is not None, k
    assert 0 < r['brightness'] < 1 and r['ts'] > 1.7e9


def test_log_rows_match_responses(server, client):
    out = post(client, CROP, 'c.png').json()
    import time
    for _ in range(50):  # the writer flushes within 200 ms
        rows = [r for r in read_prediction_log(server.log_url, decode_crops=False) if r['request_id'] == out['request_id']]
        if rows: break
        time.sleep(0.1)
    assert len(rows) == 1
    np.testing.assert_allclose(list(rows[0]['probs'].values()), probs_of(out['faces'][0]), atol=1e-12)
    assert (rows[0]['in_distribution'], rows[0]['ood_score']) == (out['faces'][0]['in_distribution'], out['faces'][0]['ood_score'])
    assert rows[0]['crop'] is None, 'faces are not kept by default (log_crops = false)'
    face = preprocess_face(read_image(CROP))
    assert abs(rows[0]['brightness'] - face.mean() / 255) < 1e-6 and rows[0]['sharpness'] > 0
    assert json.loads(json.dumps(rows[0]['probs'])) == rows[0]['probs']


def test_several_workers_share_metrics_and_log(registry_dir, tmp_path):
    "With --workers 2: the same model in each worker, /metrics adds up all workers, every row reaches the shared SQLite log."
    log_url = f"sqlite:///{tmp_path / 'predictions.sqlite'}"
    srv = serve_in_background(registry=registry_dir, log_url=log_url, workers=2, env=server_env(tmp_path, registry_dir))
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            rids = [post(c, CROP, 'c.png').json()['request_id'] for _ in range(30)]
            metrics = c.get('/metrics').text
    finally:
        code = srv.stop()
    assert code == 0, srv.output()[-2000:]
    assert 'facemood_requests_total{endpoint="/predict",method="POST",status="200"} 30.0' in metrics
    assert 'facemood_model_info{model="demo",runtime="onnxruntime",version="1"} 1.0' in metrics
    assert sorted(r['request_id'] for r in read_prediction_log(log_url, decode_crops=False)) == sorted(rids)

"""The service is safe to expose, through real uvicorn servers on 127.0.0.1: API keys on every endpoint but the open ones,
no face kept by default, erasure by request id, the rate limit, and the bound on requests in flight under `facemood bench` load."""
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from serve_fixtures import *  # noqa: F403  (fixtures: registry_dir)
from serve_fixtures import server_env

from conftest import facemood
from facemood.app import serve_in_background
from facemood.images import preprocess_face, read_image, sample_face
from facemood.predlog import read_prediction_log

CROP, PHOTO = sample_face('crop'), sample_face('photo')
OPEN = ['/health', '/', '/static/app.js', '/openapi.json', '/docs']
GUARDED = {'/model': 200, '/predict': 200, '/predict/batch': 200, '/metrics': 200, '/drift': 404, '/drift?format=json': 404, '/nowhere': 404}


def add_key(name, env):
    "`facemood keys add NAME`: the key is the last word of the last line."
    p = facemood('keys', 'add', name, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1].split()[-1]


def call(url, path, authorization=None):
    headers = {'Authorization': authorization} if authorization else {}
    if path.startswith('/predict'):
        field = 'file' if path == '/predict' else 'files'
        return httpx.post(url + path + '?detect=false', files={field: ('crop.png', CROP)}, headers=headers, timeout=30)
    return httpx.get(url + path, headers=headers, timeout=30)


@pytest.fixture(scope='module')
def keyed(registry_dir, tmp_path_factory):
    "A server with an API keys file holding alice's key and mallory's revoked one; the access log on."
    tmp = tmp_path_factory.mktemp('keyed')
    env = dict(os.environ, **server_env(tmp, registry_dir))
    key, old = add_key('alice', env), add_key('mallory', env)
    assert facemood('keys', 'revoke', 'mallory', env=env).returncode == 0
    log_url = f"sqlite:///{tmp / 'predictions.sqlite'}"
    with serve_in_background(registry=registry_dir, log_url=log_url, env=server_env(tmp, registry_dir), log_level='info') as srv:
        yield SimpleNamespace(url=srv.url, key=key, old=old, env=env, log_url=log_url, srv=srv, file=Path(env['FACEMOOD_API_KEYS_FILE']))


@pytest.mark.parametrize('who, expected', [('no key', 'needs an API key'), ('not bearer', "must be 'Bearer <key>'"),
                                           ('wrong key', 'not valid'), ('revoked key', 'revoked'), ('right key', None),
                                           ('right key, lower-case scheme', None)])
def test_auth_matrix(keyed, who, expected):
    "Every guarded endpoint answers 401 with the reason to a missing, malformed, wrong or revoked key; the open ones need none."
    auth = {'no key': None, 'not bearer': f'Basic {keyed.key}', 'wrong key': f'Bearer {keyed.key[:-6]}AAAAAA',
            'revoked key': f'Bearer {keyed.old}', 'right key': f'Bearer {keyed.key}', 'right key, lower-case scheme': f'bearer {keyed.key}'}[who]
    for path in OPEN: assert call(keyed.url, path, auth).status_code == 200, (who, path)
    for path, ok in GUARDED.items():
        r = call(keyed.url, path, auth)
        if expected is None:
            assert r.status_code == ok, (who, path, r.text)
            continue
        body = r.json()
        assert (r.status_code, body['error']) == (401, 'unauthorized'), (who, path, r.text)
        assert expected in body['message'] and body['request_id'] == r.headers['x-request-id'], body
        assert r.headers['www-authenticate'].startswith('Bearer realm="facemood"')


def test_keys_never_stored_or_logged_in_clear(keyed):
    call(keyed.url, '/model', f'Bearer {keyed.key}')
    call(keyed.url, '/model', f'Bearer {keyed.old}')
    listing = facemood('keys', 'list', env=keyed.env).stdout
    assert 'alice' in listing and 'revoked' in listing
    for text in (keyed.file.read_text(), listing, keyed.srv.output()):
        assert keyed.key not in text and keyed.old not in text
    assert 'GET /model' in keyed.srv.output(), 'the access log is on: the test would see a logged key'
    assert oct(keyed.file.stat().st_mode & 0o777) == '0o600'


def test_keys_added_and_revoked_while_serving(keyed):
    bob = add_key('bob', keyed.env)
    assert call(keyed.url, '/model', f'Bearer {bob}').status_code == 200
    assert facemood('keys', 'revoke', 'bob', env=keyed.env).returncode == 0
    r = call(keyed.url, '/model', f'Bearer {bob}')
    assert r.status_code == 401 and 'revoked' in r.json()['message']


def test_openapi_names_the_bearer_scheme(keyed):
    spec = httpx.get(keyed.url + '/openapi.json').json()
    assert spec['components']['securitySchemes']['apiKey'] == {**spec['components']['securitySchemes']['apiKey'], 'type': 'http', 'scheme': 'bearer'}
    assert spec['paths']['/predict']['post']['security'] == [{'apiKey': []}]
    assert 'security' not in spec['paths']['/health']['get']
    assert '401' in spec['paths']['/predict']['post']['responses'] and '429' in spec['paths']['/predict']['post']['responses']


def test_no_faces_kept_and_erasure_by_request_id(keyed):
    "By default the log holds predictions and statistics, not faces; `facemood log delete --request-id` erases a request's rows."
    auth = {'Authorization': f'Bearer {keyed.key}'}
    one = httpx.post(keyed.url + '/predict?detect=false', files={'file': ('crop.png', CROP)}, headers=auth, timeout=30).json()
    batch = httpx.post(keyed.url + '/predict/batch', files=[('files', ('a.jpg', PHOTO)), ('files', ('b.jpg', PHOTO))], headers=auth, timeout=30).json()
    assert one['request_id'] and batch['request_id'] and one['request_id'] != batch['request_id']
    import time
    for _ in range(50):  # the writer flushes within 200 ms
        rows = read_prediction_log(keyed.log_url)
        if {one['request_id'], batch['request_id']} <= {r['request_id'] for r in rows}: break
        time.sleep(0.1)
    mine = [r for r in rows if r['request_id'] == one['request_id']]
    assert len(mine) == 1 and mine[0]['crop'] is None
    assert abs(mine[0]['brightness'] - preprocess_face(read_image(CROP)).mean() / 255) < 1e-6
    assert all(r['crop'] is None for r in rows)
    assert len([r for r in rows if r['request_id'] == batch['request_id']]) == 2
    p = facemood('log', 'delete', '--request-id', batch['request_id'], '--log', keyed.log_url, env=keyed.env)
    assert p.returncode == 0 and 'deleted 2 rows' in p.stdout, p.stdout + p.stderr
    left = {r['request_id'] for r in read_prediction_log(keyed.log_url)}
    assert batch['request_id'] not in left and one['request_id'] in left
    p = facemood('log', 'delete', '--request-id', 'no-such-request', '--log', keyed.log_url, env=keyed.env)
    assert p.returncode == 0 and 'no rows matched' in p.stdout
    p = facemood('log', 'delete', '--log', keyed.log_url, env=keyed.env)
    assert p.returncode == 2 and '--request-id' in p.stderr
    info = json.loads(facemood('log', 'info', '--json', '--log', keyed.log_url, env=keyed.env).stdout)
    assert (info['rows'], info['crops']) == (len(read_prediction_log(keyed.log_url)), 0), info


def test_rate_limit_per_key(registry_dir, tmp_path):
    env = dict(os.environ, **server_env(tmp_path, registry_dir))
    alice, bob = add_key('alice', env), add_key('bob', env)
    with serve_in_background(registry=registry_dir, log_url='off', env=server_env(tmp_path, registry_dir, rate_limit=0.5)) as srv:
        codes = [call(srv.url, '/model', f'Bearer {alice}') for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 429, 429]
        r = codes[1]
        assert r.json()['error'] == 'rate_limited' and r.headers['retry-after'] == '2' and '0.5 per second' in r.json()['message']
        assert call(srv.url, '/model', f'Bearer {bob}').status_code == 200, 'each key has its own bucket'
        assert all(call(srv.url, '/health').status_code == 200 for _ in range(5)), '/health is never limited'


def test_open_service_warns_on_a_public_address(registry_dir, tmp_path):
    with serve_in_background(registry=registry_dir, log_url='off', env=server_env(tmp_path, registry_dir), host='0.0.0.0') as srv:
        out = srv.output()
    assert 'without API keys' in out and 'facemood keys add' in out


def test_overload_is_503_with_retry_after_and_the_service_survives(registry_dir, tmp_path):
    "More requests at once than `max_in_flight`: the surplus is refused at once (503, Retry-After), none fails, the service goes on."
    codes, lock = [], threading.Lock()
    with serve_in_background(registry=registry_dir, log_url='off', env=server_env(tmp_path, registry_dir, max_in_flight=1)) as srv:
        def user(_):
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                for _ in range(6):
                    r = c.post('/predict', files={'file': ('photo.jpg', PHOTO)})
                    with lock: codes.append((r.status_code, r.headers.get('retry-after'), r.json().get('error')))
        threads = [threading.Thread(target=user, args=(k,)) for k in range(12)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert call(srv.url, '/predict').status_code == 200 and call(srv.url, '/health').status_code == 200
    assert {c for c, _, _ in codes} <= {200, 503} and (200, None, None) in codes
    busy = [c for c in codes if c[0] == 503]
    assert busy and all(c == (503, '1', 'busy') for c in busy), codes


@pytest.mark.parametrize('limits, refused', [(['--rate-limit', '20'], '429'), (['--max-in-flight', '1'], '503')])
def test_limits_under_bench_load(site, tmp_path, limits, refused):
    "`facemood bench` with a rate limit, then with one request in flight: only 200 and the designed refusal, and the service answers after."
    out = tmp_path / 'bench'
    p = facemood('bench', '--seconds', '3', '--users', '8', '--requests', '10', '--out', out, *limits, env=site)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads((out / 'bench.json').read_text())
    status = r['server_counted']['status']
    assert set(status) <= {'200', refused} and status.get(refused, 0) > 0 and status['200'] > 0, status
    assert r['alive_after_load'] and r['server_exit_code'] == 0 and r['log']['complete'], r['log']
    assert f'{refused} ×' in (out / 'bench.md').read_text()

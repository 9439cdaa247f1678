"""A serving install: `pip install "facemood[serve]"` into a fresh virtual environment, without torch, serves a registered
ONNX model and benchmarks it. (Slow: it installs the serving dependencies; it runs in CI.)"""
import json
import subprocess
import venv

import httpx

from conftest import ROOT


def test_serving_install_without_torch(tmp_path):
    env_dir = tmp_path / 'serve-venv'
    venv.create(env_dir, with_pip=True)
    bin_ = env_dir / 'bin'
    p = subprocess.run([str(bin_ / 'python'), '-m', 'pip', 'install', '-q', f'{ROOT}[serve]'], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run([str(bin_ / 'python'), '-c', 'import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in '
                        '("torch", "pytorch_lightning", "timm", "onnxruntime", "fastapi")}))'], capture_output=True, text=True)
    assert json.loads(p.stdout) == dict(torch=False, pytorch_lightning=False, timm=False, onnxruntime=True, fastapi=True), p.stdout

    from facemood.export import demo_model   # this (training) environment exports and registers an ONNX model
    demo_model(tmp_path / 'registry')
    env = dict(FACEMOOD_REGISTRY_DIR=str(tmp_path / 'registry'), FACEMOOD_OUTPUTS_DIR=str(tmp_path / 'outputs'), PATH=str(bin_),
               HOME=str(tmp_path), MPLBACKEND='Agg')
    from facemood.app import free_port
    from facemood.registry import SHIPPED_MODEL
    port = free_port()
    srv = subprocess.Popen([str(bin_ / 'facemood'), 'serve', '--port', str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from facemood.images import sample_face
        for _ in range(300):
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=1).status_code == 200: break
            except httpx.TransportError: pass
            assert srv.poll() is None, srv.stdout.read()[-3000:]
            __import__('time').sleep(0.2)
        r = httpx.post(f'http://127.0.0.1:{port}/predict', files={'file': ('hopper.jpg', sample_face('photo'))}, timeout=30)
        assert r.status_code == 200 and r.json()['model'] == SHIPPED_MODEL and len(r.json()['faces']) == 1, r.text  # the wheel ships it
        assert httpx.get(f'http://127.0.0.1:{port}/health').json()['runtime'] == 'onnxruntime'
        assert '/docs-assets/' in httpx.get(f'http://127.0.0.1:{port}/docs').text, 'Swagger UI from the service itself, not a CDN'
    finally:
        srv.terminate(); srv.wait(30)
    p = subprocess.run([str(bin_ / 'facemood'), 'bench', '--model', 'demo', '--seconds', '2', '--users', '2', '--requests', '20', '--out', str(tmp_path / 'bench')],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'facemood service benchmark' in p.stdout and json.loads((tmp_path / 'bench' / 'bench.json').read_text())['log']['complete']

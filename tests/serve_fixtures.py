"""Fixtures for the service tests: a registry holding an untrained model, and real uvicorn servers on 127.0.0.1.

Import with `from serve_fixtures import *` in a test module.
"""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']
MAX_UPLOAD_MB = 2


def make_registry(root: Path, name: str = 'demo', seed: int = 0) -> Path:
    "A registry under `root` with one untrained seed_cnn, exported and registered like a trained model."
    from facemood.export import demo_model
    demo_model(root / 'registry', name, seed=seed, classes=tuple(CLASSES))
    return root / 'registry'


def server_env(tmp: Path, registry: Path, **settings) -> dict:
    "Environment of a test server: its own folders, no API keys file, no rate limit, a small upload limit; `settings` as FACEMOOD_<KEY>."
    env = dict(FACEMOOD_REGISTRY_DIR=str(registry), FACEMOOD_OUTPUTS_DIR=str(tmp / 'outputs'), FACEMOOD_DATA_DIR=str(tmp / 'data'),
               FACEMOOD_API_KEYS_FILE=str(tmp / 'api_keys.json'), FACEMOOD_RATE_LIMIT='0',
               FACEMOOD_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), FACEMOOD_WANDB_MODE='disabled', FACEMOOD_DEVICE='cpu')
    return {**env, **{f'FACEMOOD_{k.upper()}': str(v) for k, v in settings.items()}}


@pytest.fixture(scope='session')
def registry_dir(tmp_path_factory) -> Path:
    "A registry with the model 'demo' v1."
    return make_registry(tmp_path_factory.mktemp('serve-registry'))


@pytest.fixture(scope='session')
def server(registry_dir, tmp_path_factory):
    "A real server (uvicorn, one worker) on 127.0.0.1 for the whole session; `.url`, `.log_url`."
    from facemood.app import serve_in_background
    tmp = tmp_path_factory.mktemp('serve-site')
    log_url = f"sqlite:///{tmp / 'predictions.sqlite'}"
    with serve_in_background(registry=registry_dir, log_url=log_url, env=server_env(tmp, registry_dir)) as srv:
        srv.log_url = log_url
        yield srv


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def smooth_image(h: int = 60, w: int = 80, seed: int = 0) -> Image.Image:
    "A smooth random RGB image (like a blurry photo)."
    import cv2
    rng = np.random.default_rng(seed)
    return Image.fromarray(cv2.resize(rng.integers(0, 256, (h // 10, w // 10, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC))


def png(face: np.ndarray) -> bytes:
    "A uint8 grayscale array as PNG bytes (lossless)."
    import cv2
    return cv2.imencode('.png', np.ascontiguousarray(face, np.uint8))[1].tobytes()


def two_faces_photo() -> bytes:
    "A 960x480 JPEG holding the sample portrait twice (once mirrored): a photo with two faces."
    import cv2
    from facemood.images import sample_face
    por = cv2.imdecode(np.frombuffer(sample_face('portrait'), np.uint8), cv2.IMREAD_COLOR)
    small = cv2.resize(por, (341, 400), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 960, 3), 110, np.uint8)
    canvas[40:440, 60:401], canvas[40:440, 560:901] = small, cv2.flip(small, 1)
    return cv2.imencode('.jpg', canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def real_faces() -> dict:
    "Photographs of real people, offline, as the images a client would send: name -> list of (filename, bytes, detect).\n\n"
    "The sample portrait (its 48x48 crop, and the 640x480 photo through face detection); with scikit-image, its astronaut "
    "photo (face detection) and the 100 face crops of its `lfw_subset` (25x25 crops of Labeled Faces in the Wild)."
    from facemood.images import sample_face
    out = {'portrait': [('portrait-crop.png', sample_face('crop'), False), ('portrait-photo.jpg', sample_face('photo'), True)]}
    try:
        from skimage import data as skdata
    except ImportError:
        return out
    import cv2
    out['astronaut'] = [('astronaut.png', png(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY)), True)]
    lfw = np.rint(skdata.lfw_subset()[:100] * 255).astype(np.uint8)   # the first 100 are faces, the others not
    out['lfw'] = [(f'lfw-{i:03d}.png', png(f), False) for i, f in enumerate(lfw)]
    return out


# --- a small trained model, through the train runbook -----------------------------------------------------------

TINY = dict(synthetic_n=3000, max_epochs=8, tta=True)  # a compact_cnn on synthetic faces in under a minute on 2 cores


_TRAINED = {}  # one training per test session: fixtures star-imported into several test modules are separate fixtures to pytest


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    "The quickstart recipe, scaled down, run by `facemood run train` (with TTA): `.registry`, `.name`, `.card`, `.data`, `.env`."
    if 'tiny' not in _TRAINED: _TRAINED['tiny'] = train_tiny(tmp_path_factory.mktemp('trained'))
    return _TRAINED['tiny']


def train_tiny(root: Path):
    "Run the train runbook with `TINY` parameters in a site under `root`; the registered model and its data."
    import json
    import os
    import subprocess
    import sys
    from types import SimpleNamespace
    from facemood.cache import load_cache
    from facemood.registry import Registry
    env = dict(os.environ, **server_env(root, root / 'registry'), HF_HUB_OFFLINE='1', WANDB_MODE='offline', MPLBACKEND='Agg')
    args = ['run', 'train', '-f', 'params/base.yaml', '-f', 'params/quickstart.yaml', '-p', 'model_name', 'tiny']
    for k, v in TINY.items(): args += ['-p', k, json.dumps(v)]
    exe = Path(sys.executable).with_name('facemood')
    p = subprocess.run([str(exe), *args], env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    reg = Registry(root / 'registry')
    cache = next((root / 'data').rglob('*.npz'))
    return SimpleNamespace(root=root, registry=root / 'registry', name='tiny', card=reg.card('tiny'), folder=reg.fetch('tiny'),
                           data=load_cache(cache), env=env)


@pytest.fixture(scope='session')
def trained_server(trained):
    "A real server serving the small trained model; `.url`, `.log_url`."
    from facemood.app import serve_in_background
    log_url = f"sqlite:///{trained.root / 'predictions.sqlite'}"
    with serve_in_background(registry=trained.registry, log_url=log_url, env=server_env(trained.root, trained.registry)) as srv:
        srv.log_url = log_url
        yield srv

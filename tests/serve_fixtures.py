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


def server_env(tmp: Path, registry: Path) -> dict:
    "Environment of a test server: its own folders, a small upload limit."
    return dict(FACEMOOD_REGISTRY_DIR=str(registry), FACEMOOD_OUTPUTS_DIR=str(tmp / 'outputs'), FACEMOOD_DATA_DIR=str(tmp / 'data'),
                FACEMOOD_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), FACEMOOD_WANDB_MODE='disabled', FACEMOOD_DEVICE='cpu')


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

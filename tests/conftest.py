"""Shared fixtures: every test gets its own data, outputs and registry folders."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path, monkeypatch):
    "Site settings pointing at fresh folders under tmp_path; returns the environment for subprocesses."
    env = dict(os.environ, FACEMOOD_DATA_DIR=str(tmp_path / 'data'), FACEMOOD_OUTPUTS_DIR=str(tmp_path / 'outputs'),
               FACEMOOD_REGISTRY_DIR=str(tmp_path / 'registry'), FACEMOOD_API_KEYS_FILE=str(tmp_path / 'api_keys.json'),
               FACEMOOD_WANDB_MODE='offline', FACEMOOD_DEVICE='cpu',
               HF_HUB_OFFLINE='1', WANDB_MODE='offline', MPLBACKEND='Agg')
    for k in ('KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN'): env.pop(k, None)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    return env


def facemood(*args, env=None, cwd=ROOT, timeout=600):
    "Run the installed `facemood` command; return the CompletedProcess (text)."
    exe = Path(sys.executable).with_name('facemood')
    return subprocess.run([str(exe), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)

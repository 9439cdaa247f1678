"""Papermill smoke runs of the runbooks on tiny parameters, through the real `facemood run` command."""
import json
import re
from pathlib import Path

import nbformat

from conftest import facemood

TINY = ['-f', 'params/base.yaml', '-f', 'params/quickstart.yaml', '-p', 'synthetic_n', '700', '-p', 'max_epochs', '2',
        '-p', 'batch_size', '64', '-p', 'model_name', 'smoke', '-p', 'deterministic', 'true']


def run_dirs(site, runbook):
    return sorted((Path(site['FACEMOOD_OUTPUTS_DIR']) / runbook).glob('*/run.json'))


def load(run_json):
    d = run_json.parent
    return json.loads(run_json.read_text()), json.loads((d / 'metrics.json').read_text())


def errors_in(notebook):
    nb = nbformat.read(notebook, as_version=4)
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']


def test_train_then_evaluate(site):
    p = facemood('run', 'train', *TINY, env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    [rj] = run_dirs(site, 'train')
    rec, met = load(rj)
    d = rj.parent
    assert rec['status'] == 'completed' and rec['params']['synthetic_n'] == 700
    assert rec['git'].get('commit') and rec['data']['fingerprint'] and rec['packages']['torch'] and rec['hardware']['cpus']
    assert rec['effective_params']['arch'] == 'compact_cnn' and rec['effective_params']['max_epochs'] == 2
    assert 0 <= met['test_acc'] <= 1 and met['epochs'] == 2 and met['registered'] == 'smoke:v1'
    assert {'samples.png', 'curves.png', 'test_confusion.png', 'test_reliability.png', 'test_mistakes.png'} <= {f.name for f in (d / 'figures').iterdir()}
    assert (d / 'train.ipynb').exists() and not errors_in(d / 'train.ipynb')
    assert list((d / 'wandb').glob('offline-run-*')), 'W&B runs offline by default'
    reg = Path(site['FACEMOOD_REGISTRY_DIR']) / 'smoke'
    assert (reg / 'latest').read_text().strip() == 'v1'
    card = json.loads((reg / 'v1' / 'card.json').read_text())
    assert card['input'] == dict(card['input'], size=48, mean=0.5, std=0.5) and card['data']['fingerprint'] == rec['data']['fingerprint']
    assert 'smoke:v1' in p.stdout and 'test_acc' in p.stdout

    p = facemood('run', 'evaluate', '-p', 'model_name', 'smoke', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    [ej] = run_dirs(site, 'evaluate')
    erec, emet = load(ej)
    assert erec['status'] == 'completed' and emet['same_data_as_training'] is True
    assert abs(emet['test_acc'] - met['test_acc']) < 1e-9, 'the registered model scores what it scored at training time'
    assert not errors_in(ej.parent / 'evaluate.ipynb')


def test_same_params_same_metrics(site):
    for _ in range(2):
        p = facemood('run', 'train', *TINY, '-p', 'max_epochs', '1', '-p', 'model_name', '', env=site)
        assert p.returncode == 0, p.stderr[-3000:]
    (r1, m1), (r2, m2) = [load(rj) for rj in run_dirs(site, 'train')]
    assert r1['id'] != r2['id']
    drop = {'train_seconds'}
    assert {k: v for k, v in m1.items() if k not in drop} == {k: v for k, v in m2.items() if k not in drop}


def test_undeclared_parameter_stops_before_running(site):
    p = facemood('run', 'train', *TINY, '-p', 'learning_rate', '0.1', env=site)
    assert p.returncode == 2
    assert "declares no parameter 'learning_rate'" in p.stderr and 'Traceback' not in p.stderr
    assert not run_dirs(site, 'train')


def test_failed_run_keeps_notebook_and_error(site):
    p = facemood('run', 'train', *TINY, '-p', 'arch', 'no_such_net', env=site)
    assert p.returncode == 2 and 'Traceback' not in p.stderr
    [rj] = run_dirs(site, 'train')
    rec = json.loads(rj.read_text())
    assert rec['status'] == 'failed' and 'no_such_net' in rec['error']
    assert errors_in(rj.parent / 'train.ipynb'), 'the partly executed notebook shows where it failed'


def test_prepare_only(site):
    p = facemood('run', 'train', *TINY, '--prepare-only', env=site)
    assert p.returncode == 0, p.stderr
    [rj] = run_dirs(site, 'train')
    assert json.loads(rj.read_text())['status'] == 'prepared'
    nb = nbformat.read(rj.parent / 'train.ipynb', as_version=4)
    injected = [c for c in nb.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert injected and 'synthetic_n = 700' in injected[0].source


def test_run_folder_is_named_after_the_recipe(site):
    p = facemood('run', 'train', '-f', 'params/base.yaml', '-f', 'params/fer2013-cpu.yaml', '--prepare-only', env=site)
    assert p.returncode == 0, p.stderr
    [rj] = run_dirs(site, 'train')
    assert re.fullmatch(r'\d{8}-\d{6}-fer2013-cpu-[0-9a-f]{4}', rj.parent.name), rj.parent.name


NOISE = ('IProgress not found', 'autonotebook', 'Kernel is running over TCP', 'Tip:', 'litlogger', 'GPU available', 'TPU available',
         'Automatic Mixed Precision', 'Loading `train_dataloader`', 'Trainer.fit` stopped', 'wandb', 'W&B')


def test_terminal_shows_progress_and_results_only(site):
    p = facemood('run', 'train', *TINY, '-p', 'max_epochs', '1', '-p', 'model_name', '', '-p', 'precision', 'bf16-mixed', env=site)
    assert p.returncode == 0, p.stderr[-3000:]
    shown = [x for x in (p.stderr + p.stdout).replace('\r', '\n').splitlines() if x.strip() and not x.startswith('Executing:')]
    assert not [x for x in shown if any(n in x for n in NOISE)], shown
    assert [x for x in shown if re.fullmatch(r'epoch 1/1  train_loss \S+  val_loss \S+  val_acc \S+  [\d.]+s', x)], shown
    assert 'run completed' in p.stdout and 'test_acc' in p.stdout
    [rj] = run_dirs(site, 'train')
    log = (rj.parent / 'log.txt').read_text()
    assert 'GPU available' in log and 'Automatic Mixed Precision' in log and 'epoch 1/1' in log, 'the log keeps everything the notebook said'


def test_train_parameters_are_constructor_arguments():
    "Every parameter of the train runbook is an argument of what it builds (by name), or one of the runbook's own."
    from facemood.runs import runbook_parameters
    from facemood.train import fit_targets
    declared = set(runbook_parameters(Path(__file__).resolve().parents[1] / 'nbs' / 'runbooks' / 'train.ipynb'))
    targets = {n for names in fit_targets().values() for n in names}
    own = {'synthetic_n', 'tta', 'eval_split', 'model_name', 'run_dir'}
    assert declared - targets - own == set(), f"train runbook parameters that map to nothing: {declared - targets - own}"
    assert {'lr', 'aug_rotate', 'devices', 'trainer', 'batch_size', 'seed'} <= declared & targets

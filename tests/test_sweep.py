"""Sweeps through the real `facemood run sweep` command: a shared Optuna study, resuming, selection on validation, registration."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import optuna
import psutil
import pytest

from conftest import ROOT, facemood

# A runbook that stands for `train`: `epochs` epochs whose validation accuracy rises with `lr`, reported to its Optuna
# trial (as the train runbook's Lightning callback does), pruned when the pruner says so.
TINY = '''
import json, os, time
import optuna
from facemood.runs import save_metrics
spec = json.loads(os.environ.get('FACEMOOD_SWEEP_TRIAL') or 'null')
seen, pruned = [], False
for epoch in range(epochs):
    time.sleep(sleep)
    seen.append(round(min(0.99, 0.2 + lr*(epoch + 1)), 4))
    if spec:
        p = spec['pruner']
        study = optuna.load_study(study_name=spec['study'], storage=spec['storage'], pruner=getattr(optuna.pruners, p['name'])(**p['args']))
        trial = optuna.trial.Trial(study, spec['trial_id'])
        trial.report(seen[-1], epoch)
        if trial.should_prune(): pruned = True; break
save_metrics(run_dir, val_acc=max(seen), test_acc=max(seen) - 0.1, pruned=pruned, pid=os.getppid())
'''


def sweep_file(tmp_path, space, **settings):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("lr = 0.1\nepochs = 2\nsleep = 0.0\nrun_dir = ''", metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(TINY)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, tmp_path / 'tiny.ipynb')
    f = tmp_path / 'sweep.yaml'
    f.write_text(json.dumps(dict(runbook=str(tmp_path / 'tiny.ipynb'), space=space, pruner='none', **settings)))
    return f


def load_study(sweep_dir):
    met = json.loads((Path(sweep_dir) / 'metrics.json').read_text())
    return met, optuna.load_study(study_name=met['study'], storage=met['storage'])


def popen(*args, env):
    exe = Path(sys.executable).with_name('facemood')
    return subprocess.Popen([str(exe), *map(str, args)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_two_sweeps_share_one_study(site, tmp_path):
    grid = [0.1, 0.2, 0.3, 0.4]
    sf = sweep_file(tmp_path, {'lr': grid}, fixed={'sleep': 0.2, 'epochs': 2}, heartbeat=2)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [popen('run', 'sweep', '-f', sf, '-p', 'storage', url, '--run-dir', tmp_path / f'sweep{i}', env=site) for i in (1, 2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs): assert p.returncode == 0, err[-3000:]
    (m1, study), (m2, _) = load_study(tmp_path / 'sweep1'), load_study(tmp_path / 'sweep2')
    assert m1['study'] == m2['study'] and m1['best_trial'] == m2['best_trial'] == 'trial-003'
    trials = study.trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params['lr'] for t in trials) == grid, 'each planned configuration ran exactly once'
    ran = {i: sorted(d.name for d in (tmp_path / f'sweep{i}').glob('trial-*')) for i in (1, 2)}
    assert ran[1] and ran[2], f'both processes ran trials: {ran}'
    assert sorted(ran[1] + ran[2]) == [f'trial-{n:03d}' for n in range(4)], 'no trial ran twice'
    assert m1['ran_here'] + m2['ran_here'] == 4
    assert sum('[sweep] trial' in err for _, err in outs) == 2, 'one progress line per finished trial on the terminal'


def descendants_and_self(pid):
    p = psutil.Process(pid)
    return p.children(recursive=True) + [p]


def test_sweep_resumes_after_interruption(site, tmp_path):
    sf = sweep_file(tmp_path, {'lr': [0.1, 0.2]}, fixed={'epochs': 1}, heartbeat=1, parallel=1)
    d = tmp_path / 'sweep'
    p = popen('run', 'sweep', '-f', sf, '--run-dir', d, env=site)
    deadline = time.time() + 300
    while not (d / 'trial-001' / 'run.json').exists():   # trial 0 done, trial 1 running
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.2)
    for proc in descendants_and_self(p.pid):   # the machine dies: sweep, kernel and trial processes at once
        try: proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess: pass
    p.communicate()
    done0 = (d / 'trial-000' / 'run.json').stat().st_mtime
    assert json.loads((d / 'trial-000' / 'run.json').read_text())['status'] == 'completed'

    r = facemood('run', 'sweep', '-f', sf, '--run-dir', d, env=site)
    assert r.returncode == 0, r.stderr[-3000:]
    met, study = load_study(d)
    assert (d / 'trial-000' / 'run.json').stat().st_mtime == done0, 'a completed trial is kept, not run again'
    states = {t.number: t.state.name for t in study.trials}
    assert states[1] == 'FAIL' and met['lost'] == 1 and met['completed'] == 2, states
    retry = [t for t in study.trials if t.system_attrs.get('retry_history') == [1]]
    assert len(retry) == 1 and retry[0].params == {'lr': 0.2} and retry[0].state.name == 'COMPLETE', 'the lost trial ran again'
    assert sorted(t.params['lr'] for t in study.trials if t.state.name == 'COMPLETE') == [0.1, 0.2]
    assert 'retry of 1' in (d / 'sweep.ipynb').read_text()


def test_test_metric_is_refused(site, tmp_path):
    sf = sweep_file(tmp_path, {'lr': [0.1]})
    r = facemood('run', 'sweep', '-f', sf, '-p', 'metric', 'test_acc', '--run-dir', tmp_path / 'sweep', env=site)
    assert r.returncode == 2 and "metric 'test_acc': trials are ranked by a validation metric" in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / 'sweep').glob('trial-*'))


@pytest.mark.skipif(os.environ.get('FACEMOOD_SKIP_SLOW') == '1', reason='trains two models')
def test_sweep_selects_on_validation_and_registers_only_the_best(site):
    args = ['-f', 'params/sweep-quickstart.yaml', '-y', 'fixed: {synthetic_n: 500, max_epochs: 1, batch_size: 64}',
            '-y', 'space: {lr: [0.001, 0.01]}', '--run-dir', Path(site['FACEMOOD_OUTPUTS_DIR']) / 'sweep' / 's1']
    r = facemood('run', 'sweep', *args, env=site)
    assert r.returncode == 0, r.stderr[-3000:]
    d = Path(site['FACEMOOD_OUTPUTS_DIR']) / 'sweep' / 's1'
    met = json.loads((d / 'metrics.json').read_text())
    trials = {t.name: (json.loads((t / 'run.json').read_text()), json.loads((t / 'metrics.json').read_text())) for t in d.glob('trial-*')}
    assert len(trials) == 2 and all(rec['status'] == 'completed' and rec['runbook'] == 'train' for rec, _ in trials.values())
    assert all(rec['params']['model_name'] == '' and 'registered' not in m for rec, m in trials.values()), 'trials register nothing'
    best = max(sorted(trials), key=lambda t: trials[t][1]['val_acc'])
    assert met['best_trial'] == best and met['best_val_acc'] == trials[best][1]['val_acc'], 'the best by validation accuracy'
    assert met['test_acc'] == trials[best][1]['test_acc'], "the best trial's test accuracy, reported once"
    _, study = load_study(d)
    assert all(len(t.intermediate_values) == 1 for t in study.trials), 'training reported val_acc to its trial each epoch'
    reg = Path(site['FACEMOOD_REGISTRY_DIR'])
    assert [m.name for m in reg.iterdir()] == ['quickstart-sweep'] and met['registered'] == 'quickstart-sweep:v1'
    card = json.loads((reg / 'quickstart-sweep' / 'v1' / 'card.json').read_text())
    assert card['run']['id'] == best and Path(card['run']['dir']).resolve() == (d / best).resolve()
    assert {'metric_by_parameter.png', 'parallel_coordinates.png', 'curves.png'} <= {f.name for f in (d / 'figures').iterdir()}
    nb = nbformat.read(d / 'sweep.ipynb', as_version=4)
    assert not [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']

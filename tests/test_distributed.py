"""Multi-process training through the train runbook: two CPU processes (gloo) are the code path of N GPUs, two local
"nodes" the code path of N machines."""
import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, facemood

TINY = ['-f', 'params/base.yaml', '-f', 'params/quickstart.yaml', '-p', 'synthetic_n', '600', '-p', 'max_epochs', '2',
        '-p', 'batch_size', '64', '-p', 'device', 'cpu']


def runs(site):
    return sorted((Path(site['FACEMOOD_OUTPUTS_DIR']) / 'train').glob('*/run.json'))


def test_ddp_two_processes_from_the_runbook(site):
    p = facemood('run', 'train', *TINY, '-p', 'strategy', 'ddp', '-p', 'devices', '2', '-p', 'model_name', 'ddp', '-p', 'lr', '1e-3',
                 '-y', 'trainer: {gradient_clip_val: 1.0, accumulate_grad_batches: 2}', env=site)
    assert p.returncode == 0, p.stderr[-4000:]
    [rj] = runs(site)
    d = rj.parent
    rec, met = json.loads(rj.read_text()), json.loads((d / 'metrics.json').read_text())
    assert rec['status'] == 'completed' and rec['fit']['world_size'] == 2
    assert met['registered'] == 'ddp:v1' and 0 <= met['test_acc'] <= 1
    assert sorted(p.name for p in (Path(site['FACEMOOD_REGISTRY_DIR']) / 'ddp').iterdir()) == ['latest', 'v1'], 'one registration'
    assert (d / 'checkpoints' / 'last.ckpt').exists() and (d / 'logs' / 'metrics.csv').exists() and list((d / 'wandb').glob('offline-run-*'))
    fit = json.loads((d / 'fit.json').read_text())
    assert fit['trainer']['devices'] == 2 and fit['trainer']['trainer'] == dict(gradient_clip_val=1.0, accumulate_grad_batches=2)
    assert rec['params']['lr'] == 0.001 and fit['model']['lr'] == 0.001, '-p lr 1e-3 is a float'
    assert 'torch.distributed.run' in p.stderr and 'epoch 2/2' in p.stderr, 'the launch and the progress reach the terminal'


def test_two_nodes_on_one_machine(site, tmp_path):
    "num_nodes 2 without SLURM: this node runs the runbook, the other runs the command the runbook prints."
    from facemood.app import free_port
    port, run_dir = free_port(), tmp_path / 'two-nodes'
    env = dict(site, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), OMP_NUM_THREADS='1')
    node0 = subprocess.Popen([str(Path(sys.executable).with_name('facemood')), 'run', 'train', *TINY, '-p', 'num_nodes', '2', '-p', 'devices', '1',
                              '-p', 'model_name', '', '--run-dir', str(run_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run_dir / 'fit.json').exists() and node0.poll() is None and time.time() < deadline: time.sleep(0.5)
    node1 = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node=1', '--nnodes=2', '--node-rank=1',
                            '--master-addr=127.0.0.1', f'--master-port={port}', '-m', 'facemood.train', str(run_dir)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out, err = node0.communicate(timeout=600)
    assert node0.returncode == 0, err[-4000:]
    assert node1.returncode == 0, node1.stderr[-3000:]
    assert '--node-rank=1' in err, 'the runbook says what the other node runs'
    rec = json.loads((run_dir / 'run.json').read_text())
    assert rec['status'] == 'completed' and rec['fit']['world_size'] == 2


def test_typed_parameters_and_misspelt_trainer_arguments(site):
    p = facemood('run', 'train', *TINY, '-p', 'lr', '1e-3x', env=site)
    assert p.returncode == 2 and "parameter 'lr' of train.ipynb is declared as float" in p.stderr and 'Traceback' not in p.stderr
    assert not runs(site), 'nothing runs'
    p = facemood('run', 'train', *TINY, '-y', 'trainer: {gradient_clip_value: 1.0}', '-p', 'model_name', '', env=site)
    assert p.returncode == 2 and 'did you mean gradient_clip_val' in p.stderr and 'Traceback' not in p.stderr
    [rj] = runs(site)
    assert json.loads(rj.read_text())['status'] == 'failed', 'a failed run keeps its record'

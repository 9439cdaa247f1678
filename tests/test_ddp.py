"""A 2-process DDP run on CPU (gloo): Lightning launches the second process itself."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys
    import pytorch_lightning as pl
    from facemood.datamodule import FaceDataModule
    from facemood.model import FERModule
    from facemood.train import build_trainer
    run_dir = sys.argv[1]
    pl.seed_everything(0, workers=True)
    dm = FaceDataModule('synthetic', n=400, batch_size=32, seed=0)
    m = FERModule(arch='seed_cnn', num_classes=7, lr=3e-3)
    t = build_trainer(run_dir, max_epochs=1, device='cpu', devices=2, strategy='ddp', wandb_mode='disabled', progress_bar=False)
    t.fit(m, dm)
    if t.global_rank == 0:
        print('RESULT', json.dumps(dict(world_size=t.world_size, backend=t.strategy._process_group_backend,
                                        batches=t.num_training_batches, train_n=len(dm.index['train']))))
''')


def test_ddp_two_processes_on_cpu(site, tmp_path):
    script = tmp_path / 'ddp_fit.py'
    script.write_text(SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / 'run')], env=site, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.split('RESULT', 1)[1])
    assert res['world_size'] == 2 and res['backend'] == 'gloo'
    # each process sees its half of the training split
    assert res['train_n'] // 64 <= res['batches'] <= -(-res['train_n'] // 64)
    assert (tmp_path / 'run' / 'checkpoints' / 'last.ckpt').exists()

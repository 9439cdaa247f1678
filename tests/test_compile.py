"""torch.compile and bf16 mixed precision on the CPU: a bf16-mixed fit, compiled training that matches eager, ONNX of a compiled network."""
import copy
import math
import os
import shutil
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from facemood.datamodule import FaceDataModule
from facemood.export import export_onnx
from facemood.model import FERModule
from facemood.train import build_trainer

CXX = shutil.which(os.environ.get('CXX', 'g++')) or shutil.which('clang++')
needs_cxx = pytest.mark.skipif(CXX is None, reason="torch.compile's inductor backend compiles C++ kernels on the CPU: no C++ compiler "
                                                   "(g++, clang++ or $CXX) on PATH; install one (apt install g++) to run this test")


def small_data(batch_size=32):
    "112 training faces of the synthetic source: 3 batches of 32 per epoch, the same ones (and augmentation) for the same seed."
    return FaceDataModule('synthetic', n=140, source_seed=0, batch_size=batch_size, seed=0)


class Losses(pl.Callback):
    "The loss of every training step."
    def __init__(self): self.losses = []
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx): self.losses.append(outputs['loss'].detach().float())


def fit_steps(module, steps=3):
    "Train `module` for `steps` steps on the CPU, no validation or files; the losses."
    rec = Losses()
    trainer = pl.Trainer(accelerator='cpu', devices=1, max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False, callbacks=[rec])
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*does not have many workers.*')
        trainer.fit(module, small_data())
    return torch.stack(rec.losses)


def test_bf16_mixed_fit_on_cpu(site, tmp_path):
    "A fit through `build_trainer` with bf16-mixed: the network computes in bfloat16, weights stay float32, the loss is finite."
    torch.manual_seed(0)
    module = FERModule('compact_cnn', lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    dtypes = []
    module.model.trunk[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer = build_trainer(tmp_path/'run', max_epochs=1, device='cpu', precision='bf16-mixed', wandb_mode='disabled')
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*(does not have many workers|number of training batches).*')
        trainer.fit(module, small_data())
    assert trainer.precision == 'bf16-mixed'
    assert dtypes and set(dtypes) == {torch.bfloat16}, set(dtypes)   # training and validation steps ran under autocast
    assert all(p.dtype == torch.float32 for p in module.parameters())   # master weights in float32
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, module.parameters()))
    m = trainer.callback_metrics
    assert math.isfinite(float(m['train_loss'])) and 0 <= float(m['val_acc']) <= 1


@needs_cxx
def test_compiled_training_matches_eager_and_exports(site, tmp_path):
    "One compile: a compiled network trains as the eager one does (losses, weights), and its ONNX export is the original network's."
    import onnx
    import onnxruntime as ort
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    # SGD: updates linear in the gradients, so float rounding stays float rounding; no dropout: inductor draws its own random numbers
    eager = FERModule('compact_cnn', optimizer='sgd', lr=0.01, schedule='none', arch_kw=dict(dropout=0.0))
    compiled = copy.deepcopy(eager)
    compiled.model = torch.compile(compiled.model)
    eager_losses, compiled_losses = fit_steps(eager), fit_steps(compiled)

    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 1, "nothing was compiled"
    assert not torch._dynamo.utils.counters['graph_break'], dict(torch._dynamo.utils.counters['graph_break'])
    torch.testing.assert_close(compiled_losses, eager_losses, atol=1e-4, rtol=1e-4)
    assert eager_losses[-1] != eager_losses[0]   # it trained
    torch.testing.assert_close(compiled.model._orig_mod.state_dict(), eager.model.state_dict(), atol=1e-4, rtol=1e-3)

    check = export_onnx(compiled.model, tmp_path/'model.onnx', img_size=48)   # the compiled wrapper: export unwraps it
    assert check['max_abs_diff'] <= 1e-4
    weights = [t.name for t in onnx.load(tmp_path/'model.onnx').graph.initializer]
    assert weights and not [w for w in weights if '_orig_mod' in w], weights   # the network's own weights, not the wrapper's
    sess = ort.InferenceSession(str(tmp_path/'model.onnx'), providers=['CPUExecutionProvider'])
    x = torch.randn(8, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): ref = eager.model.eval()(x).numpy()
    logits, _ = sess.run(['logits', 'embedding'], {'input': x.numpy()})
    np.testing.assert_allclose(logits, ref, atol=1e-3, rtol=1e-3)

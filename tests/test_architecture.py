"""The shape of the package: imports point one way (notebook order), and the service runs without the training stack."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'facemood'
TRAINING_STACK = ('torch', 'pytorch_lightning', 'lightning', 'timm', 'torchmetrics', 'torchvision')


def module_order() -> list[str]:
    "facemood's modules in the order of their notebooks (nbs/NN[a]_name.ipynb, `#| default_exp`)."
    order = []
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and src.startswith('#| default_exp'):
                order.append(src.split()[2])
    return order


def facemood_imports(path: Path) -> set[str]:
    "The facemood modules `path` imports anywhere (module level or inside functions)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module if node.level == 0 else f'facemood.{node.module}'
            if mod == 'facemood': out |= {a.name for a in node.names}
            elif mod.startswith('facemood.'): out.add(mod.split('.')[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('facemood.')}
    return out


def test_imports_point_down_the_notebook_order():
    order = module_order()
    assert order[0] == 'settings' and order[-1] == 'cli', order
    assert sorted(order) == sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_')), 'one notebook per module'
    rank = {m: i for i, m in enumerate(order)}
    upward = [(m, d) for m in order for d in facemood_imports(PKG / f'{m}.py') if d in rank and rank[d] >= rank[m]]
    assert not upward, f"modules importing a module of a later notebook (or themselves): {upward}"


def test_no_import_cycle():
    graph = {p.stem: facemood_imports(p) for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'open', f"import cycle: {' -> '.join(path + [m])}"
        state[m] = 'open'
        for d in graph.get(m, ()): visit(d, path + [m])
        state[m] = 'done'
    for m in graph: visit(m, [])


SERVICE = '''
import sys, json
from fastapi.testclient import TestClient
from facemood.app import create_app
from facemood.images import sample_face
from facemood import cli, bench
with TestClient(create_app(registry=sys.argv[1], log_url='off')) as c:
    r = c.post('/predict', files={'file': ('hopper.jpg', sample_face('photo'))})
    assert r.status_code == 200 and len(r.json()['faces']) == 1, r.text
    metrics = c.get('/metrics').text
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))
''' % (TRAINING_STACK,)


def test_service_imports_no_training_stack(tmp_path):
    "The app, its detector, predictor, log, metrics and drift gauge, and the CLI, serve a request without torch."
    from facemood.export import demo_model
    demo_model(tmp_path / 'registry')
    p = subprocess.run([sys.executable, '-c', SERVICE, str(tmp_path / 'registry')], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []

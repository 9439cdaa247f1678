"""The notebooks as documents: imports stand in cells of their own (the docs build executes every cell holding one), and
the library notebooks carry the figures they show, within a size budget."""
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
FIGURES = 'image/png'
BUDGET_MB = 15


def notebooks(folder=NBS):
    return sorted(p for p in folder.glob('*.ipynb') if not p.name.startswith('_'))


def mixed_import_cells(nb: Path) -> list[str]:
    "Code cells, exported ones aside, that hold an import anywhere and other code at the top level."
    bad = []
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or src.lstrip().startswith(('#| export', '#|export')) or 'nbdev_export()' in src: continue
        try: tree = ast.parse('\n'.join(line for line in src.splitlines() if not line.lstrip().startswith(('%', '!'))))
        except SyntaxError: continue
        has_import = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))
        if has_import and not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body): bad.append(src.splitlines()[0])
    return bad


def test_imports_stand_in_their_own_cells():
    bad = {nb.name: cells for nb in notebooks() + notebooks(NBS / 'runbooks') if (cells := mixed_import_cells(nb))}
    assert not bad, f"cells mixing imports with other code (nbdev's docs build would run them out of context): {bad}"


# library notebooks that show figures (sample grids, curves, confusion matrices, detections, drift plots...)
WITH_FIGURES = ('01_images', '02_synth', '03_sources', '04_datamodule', '05_model', '06_train', '07_evaluate', '08a_ood',
                '09_faces', '09b_predict', '09c_detect_bench', '11_drift', '13a_sweep')


def outputs(nb: Path) -> list[dict]:
    return [o for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]


def test_library_notebooks_carry_their_outputs():
    "The docs site and GitHub show stored outputs only: every library notebook keeps its own; those that draw, their figures."
    lib = [nb for nb in notebooks() if nb.stem != 'index']
    without = [nb.name for nb in lib if not outputs(nb)]
    assert not without, f"notebooks without stored outputs (regenerate them with `bash .ci/outputs library`): {without}"
    no_fig = [s for s in WITH_FIGURES if not any(FIGURES in o.get('data', {}) for o in outputs(NBS / f'{s}.ipynb'))]
    assert not no_fig, f"notebooks that should show figures but store none (`bash .ci/outputs library`): {no_fig}"
    errors = [nb.name for nb in lib if any(o.get('output_type') == 'error' for o in outputs(nb))]
    assert not errors, f"notebooks whose stored outputs hold an error: {errors}"


def test_example_runs_are_executed_runbooks():
    examples = sorted((NBS / 'examples').glob('0*.ipynb'))
    assert [p.stem.split('_', 1)[1] for p in examples] == ['train', 'evaluate', 'sweep', 'drift']
    for p in examples:
        assert any(FIGURES in o.get('data', {}) for o in outputs(p)), f"{p.name} shows no figure"
        assert not any(o.get('output_type') == 'error' for o in outputs(p)), f"{p.name} stores an error"


def test_notebooks_stay_small():
    mb = sum(p.stat().st_size for p in NBS.rglob('*') if p.is_file() and 'runs' not in p.parts) / 1e6
    assert mb <= BUDGET_MB, f"nbs/ holds {mb:.1f} MB of files; keep figures small (dpi, figure sizes) to stay under {BUDGET_MB} MB"

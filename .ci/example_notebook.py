"""Example runs for the docs and their nbval check.

  python .ci/example_notebook.py keep EXECUTED.ipynb DEST.ipynb RUN_DIR
      keep an executed runbook as a docs example: its run folder becomes RUN_DIR, a path relative to the example's
      folder, so the example reruns from wherever the checkout is;
  python .ci/example_notebook.py for-nbval SRC_DIR DEST_DIR
      copy the examples for nbval with their execution counts back (nbdev-clean removes them, and nbval takes a cell
      without one for a cell that never ran)."""
import shutil
import sys
from pathlib import Path

import nbformat

if sys.argv[1] == 'keep':
    src, dest, run_dir = sys.argv[2:]
    nb = nbformat.read(src, as_version=4)
    for c in nb.cells:
        if 'injected-parameters' in c.metadata.get('tags', []):
            c.source = '\n'.join(f"run_dir = __import__('os').path.abspath({run_dir!r})" if line.startswith('run_dir = ') else line
                                 for line in c.source.splitlines())
    nbformat.write(nb, dest)
else:
    src, dest = Path(sys.argv[2]), Path(sys.argv[3])
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob('0*.ipynb')):
        nb = nbformat.read(f, as_version=4)
        for i, c in enumerate(c for c in nb.cells if c.cell_type == 'code'): c.execution_count = i + 1
        nbformat.write(nb, dest/f.name)
    shutil.copy(src/'sanitize.cfg', dest/'sanitize.cfg')

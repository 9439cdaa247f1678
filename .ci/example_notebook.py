"""Keep an executed runbook as a docs example: its run folder becomes a path relative to the example's folder, so the
example reruns (nbval) from wherever the checkout is."""
import sys

import nbformat

src, dest, run_dir = sys.argv[1:]
nb = nbformat.read(src, as_version=4)
for c in nb.cells:
    if 'injected-parameters' in c.metadata.get('tags', []):
        c.source = '\n'.join(f"run_dir = {run_dir!r}" if line.startswith('run_dir = ') else line for line in c.source.splitlines())
nbformat.write(nb, dest)

"""Run by Python at startup in the programs ``tomograph run`` starts (this folder is first on
their ``PYTHONPATH``).

It hides any other ``sitecustomize`` (the user's, the virtualenv's or the distribution's), so it
runs that one first, under the same name, then sets up tracing. Nothing here may stop the
program: a Python that cannot import tomograph (another interpreter the traced program runs)
gets one line on stderr and runs untraced.
"""

import os
import sys


def _same_folder(entry: str, folder: str) -> bool:
    try:
        return os.path.samefile(entry or os.curdir, folder)
    except OSError:  # a sys.path entry that does not exist (or a zip file)
        return False


def _run_hidden_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [entry for entry in sys.path if not _same_folder(entry, here)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    # Under the name: `import sitecustomize` gives it, as it would without tomograph.
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _start_tracing() -> None:
    try:
        from tomograph._bootstrap import start
    except Exception as error:
        sys.stderr.write(f"tomograph run: {sys.executable} runs untraced: {error!r}\n")
        return
    start()


try:
    _run_hidden_sitecustomize()  # first: it may set up the environment the program runs in
finally:
    # Even if that one failed (Python then prints "Error in sitecustomize", as it would anyway).
    _start_tracing()

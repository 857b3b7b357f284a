"""Console: our lines and warnings by default, library INFO only with --verbosity, log lines
through tqdm.write (above the bar), the os.fork warning of every MP4 gone."""

import logging
import warnings

import pytest

from stiv_jax import console


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings():
        yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _emit():
    logging.info("ours")
    logging.getLogger("stiv_jax.pipeline").info("ours too")
    logging.getLogger("absl").info("orbax INFO line")  # Orbax logs through absl
    logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
    logging.getLogger("absl").warning("library warning")
    warnings.warn("os.fork() was called. os.fork() is incompatible", RuntimeWarning, stacklevel=1)
    warnings.warn("a real warning", UserWarning, stacklevel=1)


def test_default_shows_our_lines_and_warnings_only(restore_logging, capsys, monkeypatch):
    written = []
    from tqdm import tqdm

    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, **kw: written.append(s)))
    console.setup(0)
    _emit()
    text = "\n".join(written)
    assert "ours" in text and "ours too" in text
    assert "WARNING library warning" in text and "a real warning" in text
    assert "orbax INFO" not in text and "Unable to initialize" not in text
    assert "os.fork" not in text
    assert capsys.readouterr().err == ""  # nothing bypassed tqdm.write


def test_verbosity_one_adds_library_lines_and_minus_one_hides_ours(restore_logging, capsys):
    console.setup(1)
    _emit()
    err = capsys.readouterr().err
    assert "[absl] orbax INFO line" in err and "Unable to initialize" in err
    console.setup(-1)
    _emit()
    err = capsys.readouterr().err
    assert "ours" not in err and "library warning" in err


def test_timed_logs_start_and_seconds(restore_logging, caplog):
    with caplog.at_level(logging.INFO), console.timed("compiling x") as took:
        pass
    assert [r.getMessage() for r in caplog.records][0] == "compiling x…"
    assert caplog.records[-1].getMessage() == f"compiling x: {took['seconds']:.1f} s"

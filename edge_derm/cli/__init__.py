"""The ``edge-derm`` command line: thin typer sub-apps, one file per command group.

No command module imports TensorFlow at import time (``edge-derm --help`` must start in about
a second); they import the library lazily inside the command functions.
Library errors (the EdgeDermError family) become ``error: <message>`` and exit code 1 (Ctrl-C: 130).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer depends on click
    from click import exceptions as click_exc

import edge_derm  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from edge_derm import progress
from edge_derm.errors import EdgeDermError, Interrupted, data_error_from_tf

#: Modules whose Python warnings are hidden unless --verbose (e.g. "Statistics for quantized inputs were
#: expected, but not specified" on every int8 conversion, deprecation notices of tf.lite.Interpreter).
THIRD_PARTY_WARNINGS = r"(tensorflow|tf_keras|keras|tensorflow_model_optimization|absl|ai_edge_litert|h5py|google)(\..*)?$"

#: What ``pip install 'edge-derm[train]'`` adds to the runtime install (predict, benchmark, report, export).
TRAIN_MODULES = frozenset({"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "sklearn", "matplotlib"})

app = typer.Typer(
    name="edge-derm",
    help="Skin-lesion photographs to small, fast, verified on-device classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; only results and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library details to stderr."),
) -> None:
    """Skin-lesion photographs to small, fast, verified on-device classifiers."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # third-party Python warnings (the TFLite converter's UserWarnings, ...): not ours to act on
        import warnings

        warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNINGS)
    if quiet:
        progress.disable()
    else:
        from rich.console import Console

        progress.enable(Console(stderr=True))


def _register() -> None:
    from edge_derm.cli import benchmark, convert, data, demo, export, models, predict, report, train

    for module in (data, models, train, convert, predict, benchmark, export, demo, report):
        module.register(app)


_register()


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills, even inside a blocked native call
    raise KeyboardInterrupt  # unwinds like Ctrl-C: every staged output removes its temporary folder


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (also usable from tests)."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        rv = app(args=argv, prog_name="edge-derm", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("aborted")
        return 130
    except click_exc.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as before
            exc.show()
            return 1
        # One line, like every other error: click's own form is four (usage, hint, blank, message).
        message = " ".join(exc.format_message().split())
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if isinstance(exc, click_exc.UsageError) and ctx else ""
        _error(message + hint)
        return 1
    except Interrupted as exc:  # a command that says what it kept (train)
        _error(str(exc))
        return 130
    except EdgeDermError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where} (check free disk space and permissions)")
        return 1
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in TRAIN_MODULES:
            raise
        _error(f"this command needs {missing}, one of the training dependencies that the runtime install leaves "
               "out: pip install 'edge-derm[train]'")
        return 1
    except Exception as exc:
        translated = data_error_from_tf(exc)  # an image that went bad after the build, inside TensorFlow
        if translated is None:
            raise
        _error(str(translated))
        return 1
    finally:
        progress.disable()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if rv == 130:  # typer turns Ctrl-C (and SIGTERM, see _sigterm) into a silent exit code 130
        _error("interrupted")
    return rv if isinstance(rv, int) else 0


def entry() -> None:  # pragma: no cover - thin wrapper
    if not {"-v", "--verbose"} & set(sys.argv[1:]):
        from edge_derm._stderr import filter_native_stderr

        filter_native_stderr()
    code = 1
    try:
        code = main()
    except Exception:  # noqa: BLE001 - a bug, not bad input: its traceback is the report, printed before os._exit
        import traceback

        traceback.print_exc()
    finally:
        if code != 0 and "tensorflow" in sys.modules:
            # After a failed TensorFlow command, interpreter shutdown can block on tf.data's worker threads
            # (an input pipeline stopped mid-epoch); everything is written or removed by now, so leave at once.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)
    sys.exit(code)

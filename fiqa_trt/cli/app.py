"""The `fiqa-trt` command line: the typer app, each command registered from its own module, and `main`.

The command modules parse options, call the library and report; no scoring logic lives in this package, and
nothing outside it imports it.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from fiqa_trt.cli import bench, build, calibrate, console, eval, export, gate, perturbations, score, serve, weights
from fiqa_trt.cli.console import err
from fiqa_trt.errors import FiqaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face image quality by embedding stability: perturb, embed, compare.")



def _version(value: bool) -> None:
    if value:
        from fiqa_trt import __version__

        typer.echo(f"fiqa-trt {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Face image quality by embedding stability: perturb, embed, compare."""


for command in (score, bench, perturbations, eval, export, weights, gate, build, serve, calibrate):
    command.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the command line (`argv`: the arguments, default sys.argv[1:]); a user mistake (FiqaError) is one line on
    standard error and exit code 2 (1 where the error says nothing could be done), never a traceback. Run as the
    real process (argv None), native libraries' raw log lines are kept off the terminal unless -v."""
    import sys

    from fiqa_trt.cli.console import filter_native_stderr, quiet_image_warnings

    console.ARGUMENTS[:] = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not {"-v", "--verbose"} & set(sys.argv[1:] if argv is None else argv):
        quiet_image_warnings()
        if argv is None:
            filter_native_stderr()
    try:
        app(args=argv)
    except FiqaError as exc:  # exit 2 for a usage mistake, 1 where the error says nothing could be done
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise SystemExit(exc.exit_code)
    except OSError as exc:  # standard output on a full disk (a listing, the help): one line, exit 1
        if not _written_to_standard_output(exc):
            raise
        err.print(f"[red]error:[/] cannot write standard output: {escape(exc.strerror or str(exc))}")
        raise SystemExit(1) from None


def _written_to_standard_output(exc: OSError) -> bool:
    """Whether `exc` was raised by a write to standard output (the innermost frame writes to it, itself or through
    a console, or standard output cannot be flushed); if so, standard output is pointed at /dev/null so that the
    flush at exit does not fail again."""
    import os
    import sys

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    streams = [s for s in (sys.stdout, sys.__stdout__) if s is not None]
    streams += [getattr(s, "buffer", None) for s in streams]
    local = tb.tb_frame.f_locals.values() if tb is not None else ()
    if not any(v is s or getattr(v, "file", None) is s for v in local for s in streams if s is not None):
        try:  # a write from native code or a builtin (print): what it left in the buffer cannot be written either
            sys.stdout.flush()
            return False
        except (OSError, ValueError, AttributeError):
            pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
    return True

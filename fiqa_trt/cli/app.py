"""The `fiqa-trt` command line: the typer app, each command registered from its own module, and `main`.

The command modules parse options, call the library and report; no scoring logic lives in this package, and
nothing outside it imports it.
"""

from __future__ import annotations

import typer
from rich.markup import escape

from fiqa_trt.cli import bench, build, eval, export, gate, perturbations, score, serve, weights
from fiqa_trt.cli.console import err
from fiqa_trt.errors import FiqaError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face image quality by embedding stability: perturb, embed, compare.")

for command in (score, bench, perturbations, eval, export, weights, gate, build, serve):
    command.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the command line (`argv`: the arguments, default sys.argv[1:]); a user mistake (FiqaError) is one line on
    standard error and exit code 2, never a traceback."""
    try:
        app(args=argv)
    except FiqaError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()

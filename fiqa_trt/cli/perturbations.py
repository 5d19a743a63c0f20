"""The `fiqa-trt perturbations` command: the registry listing."""

from __future__ import annotations

import typer
from rich.console import Console


def perturbations() -> None:
    """List the perturbations, their parameters and defaults."""
    from rich.markup import escape

    from fiqa_trt.engine.perturbations import DEFAULT_SPEC, STUDY, describe

    console = Console()
    for name, help_text, params in describe():
        console.print(f"[bold]{name}[/]: {help_text}")
        for pname, default, phelp in params:
            console.print(f"    {pname} = {default:<6} {phelp}")
        if name in STUDY:
            console.print(f"    [dim]'{name}:study' = {escape(STUDY[name] or 'the defaults')} (the original study's)[/]")
    console.print(f"\ndefault: --perturb '{DEFAULT_SPEC}'. A value may be a range low:high, drawn per view.")


def register(app: typer.Typer) -> None:
    app.command()(perturbations)

"""mkdocs hook: pages generated at build time from the command line itself, so no option list is typed by hand.

- reference/cli.md: every command, argument and option, written by typer's own generator
  (`python -m typer fiqa_trt.cli.app utils docs`) from the typer app;
- reference/perturbations.md: the output of `fiqa-trt perturbations` (the registry of perturbation kinds).

Run alone (`python docs/tools/generated_pages.py`) it prints both pages.
"""

from __future__ import annotations

import os
import subprocess
import sys

CLI_PAGE = "reference/cli.md"
PERTURBATIONS_PAGE = "reference/perturbations.md"


def _run(args: list[str]) -> str:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", TERM="dumb")
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"`python {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def cli_reference() -> str:
    text = _run(["-m", "typer", "fiqa_trt.cli.app", "utils", "docs", "--name", "fiqa-trt",
                 "--title", "Command line reference"])
    title, _, rest = text.partition("\n")
    intro = ("Generated when the documentation is built, by typer's own generator from the `fiqa-trt` typer app: "
             "the same text as `fiqa-trt COMMAND --help`. The [user guide](../guide/scoring.md) explains what the "
             "options do together.")
    return f"{title}\n\n{intro}\n{rest}"


def perturbations_reference() -> str:
    listing = _run(["-c", "from fiqa_trt.cli.app import main; main(['perturbations'])"])
    return ("# Perturbations\n\nThe perturbation kinds, their parameters and defaults, as `fiqa-trt perturbations` "
            "prints them (generated when the documentation is built). A spec is `name:param=value,...`; the "
            "[scoring guide](../guide/scoring.md#perturbations-and-views) explains specs and views.\n\n"
            f"```text\n{listing.rstrip()}\n```\n")


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, make in ((CLI_PAGE, cli_reference), (PERTURBATIONS_PAGE, perturbations_reference)):
        try:
            content = make()
        except RuntimeError as exc:
            from mkdocs.exceptions import PluginError

            raise PluginError(str(exc)) from exc
        files.append(File.generated(config, path, content=content))
    return files


if __name__ == "__main__":
    print(cli_reference())
    print(perturbations_reference())

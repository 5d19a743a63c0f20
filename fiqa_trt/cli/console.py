"""What every command shares for talking to the user: the standard-error console, logging, the rate column."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import ProgressColumn
from rich.text import Text

err = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Images per second, for rich progress bars."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "- img/s", style="cyan")


def setup_logging(verbose: bool) -> None:
    """Route the `fiqa_trt` logger to the console: INFO by default, DEBUG with -v."""
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("fiqa_trt")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False

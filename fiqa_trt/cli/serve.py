"""The `fiqa-trt serve` command: builds one Scorer as `score` does and serves it over HTTP (fiqa_trt.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.errors import FiqaError, MissingDependency


@args.command(args.MODEL, args.RUNTIME.without("batch_size"), args.VIEWS,
              args.ALIGNMENT.without("all_faces"), args.OUTPUT.without("quiet"))
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (anything but localhost wants --api-key-file)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_batch: int = typer.Option(64, help="Most images per scored batch (gathered across requests)."),
    max_wait_ms: float = typer.Option(5.0, help="Longest a queued image waits for a fuller batch."),
    queue: int = typer.Option(1024, help="Most images queued; past it a request gets 503 with Retry-After."),
    max_images: int = typer.Option(64, help="Most images per request (413 past it)."),
    max_upload_mb: float = typer.Option(32.0, help="Largest request body, in MiB (413 past it)."),
    max_pixels: int = typer.Option(40_000_000, help="Largest decoded image, width x height (decompression bombs)."),
    max_request_pixels: int = typer.Option(64_000_000, help="Most decoded pixels of all the images of one request "
                                           "(413 past it)."),
    max_inflight_pixels: int = typer.Option(128_000_000, help="Most decoded pixels queued or being scored over all "
                                            "requests (503 with Retry-After past it)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds a request may wait for its scores (504 past it)."),
    read_timeout: float = typer.Option(30.0, "--read-timeout", help="Seconds a client may take to send its request "
                                       "headers, and then its body (408 past it)."),
    api_key_file: Optional[Path] = typer.Option(None, help="File holding the API key every route but /healthz "
                                                "needs (X-API-Key or Authorization: Bearer)."),
    settings: ScoringSettings = None,
    output: args.Output = None,
) -> None:
    """Serve quality scores over HTTP: POST /v1/quality, /healthz, /readyz, /v1/model, /metrics."""
    verbose = output.verbose
    setup_logging(verbose)
    try:
        from fiqa_trt.serve.app import QualityService, Settings, create_app
        from fiqa_trt.serve.limits import Limits
        from fiqa_trt.serve.server import is_local, run
    except ImportError as exc:
        raise MissingDependency(exc.name or "fastapi", "serve") from None
    from fiqa_trt.engine.perturbations import parse_spec
    from fiqa_trt.engine.session import open_session

    if not 1 <= port <= 65535:
        raise FiqaError(f"--port {port}: give a TCP port from 1 to 65535")
    for option, value, low, above in (
            ("--max-batch", max_batch, 1, False), ("--max-images", max_images, 1, False),
            ("--max-wait-ms", max_wait_ms, 0, False), ("--timeout", timeout, 0, True),
            ("--max-upload-mb", max_upload_mb, 0, True), ("--max-pixels", max_pixels, 1, False),
            ("--max-request-pixels", max_request_pixels, 1, False),
            ("--max-inflight-pixels", max_inflight_pixels, 1, False), ("--read-timeout", read_timeout, 0, True)):
        args.check_range(option, value, low, above=above)
    if queue < max_batch:
        raise FiqaError(f"--queue {queue}: give at least --max-batch ({max_batch}), the images one batch takes")
    settings = settings.with_(batch_size=max_batch).check()  # the pipeline's batch: the largest the batcher forms
    if any(parse_spec(spec).kind.name == "mixup" for spec in settings.perturb):
        raise FiqaError("mixup draws its partner from a list of input files; serve scores uploads without it")
    key = _read_key(api_key_file) if api_key_file else None
    if key is None and not is_local(host):
        err.print(f"[yellow]warning:[/] serving on {host} without --api-key-file: anyone who reaches this port "
                  "can use the service")
    session = open_session(settings)
    scorer, runner = session.scorer, session.runner
    if verbose:
        for line in session.resolution.lines():
            err.print(line)
    limits = Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_images=max_images,
                    max_pixels=max_pixels, max_request_pixels=max_request_pixels,
                    max_inflight_pixels=max_inflight_pixels, timeout_s=timeout, read_timeout_s=read_timeout)
    service = QualityService(scorer, Settings(max_batch=max_batch, max_wait_ms=max_wait_ms, queue=queue,
                                              limits=limits, api_key=key,
                                              model_info={"model": Path(session.resolution.model).name,
                                                          "resolution": session.resolution.to_dict()}))
    cfg = runner.config
    err.print(f"serving model [bold]{cfg.name}[/] on {runner.name} {runner.precision} ({scorer.device}), "
              f"{len(scorer.views)} view(s), batches of up to {max_batch} within {max_wait_ms:g} ms, on "
              f"http://{host}:{port}" + (" (API key required)" if key else ""))
    run(create_app(service), service, host=host, port=port, log_level="debug" if verbose else "info")


def _read_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FiqaError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    if not key:
        raise FiqaError(f"the API key file {path} is empty")
    return key


def register(app: typer.Typer) -> None:
    app.command()(serve)

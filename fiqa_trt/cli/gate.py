"""The `fiqa-trt gate` command: parses options, builds the scorer and the `gate.gate.Gate`, reports.

`register(app)` adds the command to the main typer app. User mistakes raise FiqaError (printed by the main CLI
without a traceback, exit 2); a URL that cannot be opened exits with 1, Ctrl-C with 130, SIGTERM with 143 (both
after the track events and the summary).
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape

from fiqa_trt.cli import args
from fiqa_trt.cli.console import err, setup_logging
from fiqa_trt.engine.settings import ScoringSettings
from fiqa_trt.gate.gate import MIN_FACE


@args.command(args.MODEL, args.RUNTIME.without("batch_size"), args.VIEWS, args.REALIGN, args.OUTPUT)
def gate(
    sources: list[str] = typer.Argument(..., help="One or more webcam indices (0), RTSP/HTTP URLs, video files or "
                                        "folders of frames, gated together in one process."),
    threshold: Optional[float] = typer.Option(None, help="Accept when the score >= this (default: 50 on the "
                                              "calibrated scale; on the raw scale the raw quality that scores 50, "
                                              "needed where the recipe has no calibration)."),
    scale: str = typer.Option("auto", help="calibrated (the 0-100 score of the recipe, as `score` writes it), raw "
                              "(the recipe's raw quality), or auto: calibrated when the recipe has a calibration "
                              "for this model (or is a stability recipe: the generic scale), else raw."),
    events: str = typer.Option("-", "--events", "-o", help="JSON-lines events: a file, or - for standard "
                               "output."),
    best_dir: Optional[str] = typer.Option(None, "--best-dir", help="Save each track's best-shot crop here."),
    video_out: Optional[str] = typer.Option(None, "--video-out", help="Write an annotated video (.avi: MJPG, "
                                            ".mp4: mp4v; NAME.sI.avi per stream with several sources)."),
    batch_frames: int = typer.Option(4, help="Most frames per stream whose faces are detected and scored in one "
                                     "batch."),
    drop: Optional[str] = typer.Option(None, help="When the gate falls behind a stream: oldest (drop the oldest "
                                       "queued frame; default for cameras and URLs) or none (wait; default for "
                                       "files and folders)."),
    queue_size: int = typer.Option(8, help="Frames each stream's reader may queue."),
    max_missed: int = typer.Option(5, help="A track ends after more than this many frames without its face."),
    min_iou: float = typer.Option(0.3, help="Least IoU for a face to continue a track."),
    detector: str = typer.Option("mtcnn", help="Face detector: mtcnn (MTCNN's ONNX networks on the model's backend "
                                 "and device, one thread beside the scoring) or dlib's hog or cnn."),
    min_face: float = typer.Option(MIN_FACE, help="mtcnn: the smallest face to find, in pixels of the full frame "
                                   "(its box, about brow to chin); the frame is downscaled so that such a face is "
                                   "12 px for the first detection stage."),
    upsample: int = typer.Option(1, help="hog/cnn: detector upsampling (1 finds faces down to about 40 px)."),
    transport: str = typer.Option("tcp", help="RTSP transport: tcp (RTP in the RTSP connection) or udp."),
    open_timeout: float = typer.Option(10.0, help="URLs: seconds for a connection to deliver its stream; the "
                                       "first connection failing ends that stream (exit 1 when no source opens)."),
    read_timeout: float = typer.Option(5.0, help="URLs: seconds without data before the connection counts as "
                                       "lost (then reconnect)."),
    max_reconnects: int = typer.Option(10, help="URLs: failed reconnection attempts in a row before giving up "
                                       "(backoff 0.5 s, doubling, at most 30 s)."),
    settings: ScoringSettings = None,
    output: args.Output = None,
) -> None:
    """Gate camera streams, URLs, videos or folders of frames on face quality, several in one process: JSON-lines
    events per face, per track (best shot) and per outage, each with its stream, and a summary at the end (also on
    Ctrl-C and SIGTERM) with per-stream counts.

    Exit codes: 0 done (also when a stream ended after giving up reconnecting), 1 no source could be opened (a URL
    whose first connection failed: refused, or no stream within the open timeout), no frame could be read from any,
    or the events could not be written (a full disk), 2 a usage mistake, 130 Ctrl-C, 143 SIGTERM."""
    from fiqa_trt.cli.console import Interrupts
    from fiqa_trt.engine.detect import CELL, DETECTORS
    from fiqa_trt.errors import FiqaError
    from fiqa_trt.gate.gate import check_tracking, check_video_out
    from fiqa_trt.gate.network import StreamUnavailable
    from fiqa_trt.gate.streams import kind_of

    setup_logging(output.verbose)
    for source in sources:
        kind_of(source)  # a missing source is a usage mistake, before the model is loaded
    if detector not in DETECTORS:
        raise FiqaError(f"unknown face detector '{detector}'; use one of: {', '.join(DETECTORS)}")
    if scale not in ("auto", "raw", "calibrated"):
        raise FiqaError(f"unknown score scale '{scale}'; use auto, raw or calibrated")
    check_tracking(batch_frames, min_iou, max_missed)
    quiet = output.quiet
    settings = settings.check()
    for option, value, low, above in (("--queue-size", queue_size, 1, False), ("--upsample", upsample, 0, False),
                                      ("--min-face", min_face if detector == "mtcnn" else None, CELL, False),
                                      ("--open-timeout", open_timeout, 0, True),
                                      ("--read-timeout", read_timeout, 0, True),
                                      ("--max-reconnects", max_reconnects, 0, False)):
        args.check_range(option, value, low, above=above)
    args.check_range("--threshold", threshold)
    check_video_out(video_out)
    # SIGTERM ends the run as Ctrl-C does from here on (tracks, summary, exit 143), also while the model loads;
    # whatever an interrupted import or pipeline build leaves behind ends the run the same way
    with Interrupts(kept="the events written so far are kept") as interrupts:
        try:
            summary = _run(sources, settings, output, scale, threshold, detector, min_face, upsample, events,
                           best_dir, video_out, batch_frames, min_iou, max_missed, drop, queue_size,
                           {"transport": transport, "open_timeout": open_timeout, "read_timeout": read_timeout,
                            "max_reconnects": max_reconnects})
        except StreamUnavailable as exc:
            if interrupts.received is not None:
                raise typer.Exit(interrupts.exit_code) from None
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:  # before the first frame: nothing to summarise
            raise typer.Exit(interrupts.exit_code) from None
        except Exception:
            if interrupts.received is not None:
                raise typer.Exit(interrupts.exit_code) from None
            raise
    if not quiet:
        shown = {k: v for k, v in summary.items() if k not in ("event", "time", "streams")}
        err.print(json.dumps(shown))
        for part in summary["streams"] if len(summary["streams"]) > 1 else []:
            err.print(json.dumps(part))
    if summary["interrupted"]:
        raise typer.Exit(interrupts.exit_code)
    for part in summary["streams"]:
        if part["frames_read"] == 0 and not part["errors"]:
            err.print(f"[yellow]warning:[/] no frame could be read from {escape(part['source'])}"
                      + (f" ({part['frames_unreadable']} unreadable)" if part["frames_unreadable"] else ""))
    if summary["frames_read"] == 0:  # nothing was done, as in `score`
        err.print("[red]error:[/] no frame could be read" + (f" from {escape(sources[0])}" if len(sources) == 1
                                                            else " from any source"))
        raise typer.Exit(1)


def _run(sources, settings, output, scale, threshold, detector, min_face, upsample, events, best_dir, video_out,
         batch_frames, min_iou, max_missed, drop, queue_size, network) -> dict:
    """Open the session, the detector and the gate, and gate the sources: the summary."""
    from fiqa_trt.engine.resolve import resolve
    from fiqa_trt.engine.session import open_session
    from fiqa_trt.gate.gate import Gate, gate_threshold
    from fiqa_trt.quality.scale import GENERIC_WARNING, for_recipe

    resolution = resolve(settings)  # the model's calibration, read before the model loads
    # the recipe's 0-100 scale as the Scorer takes it: its calibration, else for a stability recipe the generic scale
    calibration = for_recipe(resolution.recipe, generic=True)
    if calibration is not None and calibration.kind == "generic" and scale != "raw":
        err.print(f"[yellow]warning:[/] {escape(GENERIC_WARNING)}")
    if scale == "auto":
        scale = "calibrated" if calibration is not None else "raw"
    gate_threshold(scale, calibration, threshold, warn=False)  # a threshold off its scale: refused here
    # the detector's faces are realigned as `score` realigns a crop (each by itself), as the resolver decides
    session = open_session(settings, resolution=resolution)
    scorer = session.scorer
    if output.verbose:
        for line in session.resolution.lines():
            err.print(escape(line))
    if not output.quiet and scorer.recipe is not None:
        err.print(escape(session.describe_recipe()))
    aligner = _detector(detector, scorer, min_face, upsample, settings.backend)
    gate_ = Gate(scorer, aligner, threshold=threshold, scale=scale, calibration=calibration, events=events,
                 best_dir=best_dir, video_out=video_out, batch_frames=batch_frames, min_iou=min_iou,
                 max_missed=max_missed)
    return gate_.run(sources, drop=drop, queue_size=queue_size, network=network)


def _detector(name: str, scorer, min_face: float, upsample: int, backend: str):
    """The gate's aligner: MTCNN on the scorer's backend family and device (BGR frames, one thread), or dlib's."""
    from fiqa_trt.engine.detect import make_aligner

    size = tuple(scorer.runner.config.input_size)
    if name == "mtcnn":
        on_cpu = backend if backend in ("onnxruntime", "openvino") else "auto"
        return make_aligner("mtcnn", all_faces=True, size=size, min_face=min_face, channels="bgr", threads=1,
                            backend=on_cpu, device=str(scorer.device), detect_size=None)
    return make_aligner(name, all_faces=True, size=size, upsample=upsample)


def register(app: typer.Typer) -> None:
    app.command()(gate)

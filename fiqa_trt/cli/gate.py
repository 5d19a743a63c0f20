"""The `fiqa-trt gate` command: parses options, builds the scorer and the `gate.gate.Gate`, reports.

`register(app)` adds the command to the main typer app. User mistakes raise FiqaError (printed by the main CLI
without a traceback, exit 2); a URL that cannot be opened exits with 1, Ctrl-C with 130, SIGTERM with 143 (both
after the track events and the summary).
"""

from __future__ import annotations

import json
import signal
from typing import Optional

import typer
from rich.markup import escape

from fiqa_trt.cli import options
from fiqa_trt.cli.console import err, setup_logging


def gate(
    source: str = typer.Argument(..., help="A webcam index (0), an RTSP/HTTP URL, a video file or a folder of "
                                 "frames."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="ONNX face-recognition model (default: "
                                        "dlib's ResNet, as for `fiqa-trt score`)."),
    threshold: Optional[float] = typer.Option(None, help="Accept when the score >= this (default: 50 on the "
                                              "calibrated scale, 0.95 on the raw one)."),
    scale: str = typer.Option("auto", help="calibrated (the 0-100 score of the recipe, as `score` writes it), raw "
                              "(the recipe's raw quality), or auto: calibrated when the recipe has a calibration "
                              "for this model, else raw."),
    events: str = typer.Option("-", "--events", "-o", help="JSON-lines events: a file, or - for standard "
                               "output."),
    best_dir: Optional[str] = typer.Option(None, "--best-dir", help="Save each track's best-shot crop here."),
    video_out: Optional[str] = typer.Option(None, "--video-out", help="Write an annotated video (.avi: MJPG, "
                                            ".mp4: mp4v)."),
    batch_frames: int = typer.Option(4, help="Most frames whose faces are scored in one batch."),
    drop: Optional[str] = typer.Option(None, help="When scoring falls behind: oldest (drop the oldest queued "
                                       "frame; default for cameras and URLs) or none (wait; default for files "
                                       "and folders)."),
    queue_size: int = typer.Option(8, help="Frames the reader may queue."),
    max_missed: int = typer.Option(5, help="A track ends after more than this many frames without its face."),
    min_iou: float = typer.Option(0.3, help="Least IoU for a face to continue a track."),
    perturb: Optional[list[str]] = typer.Option(None, "--perturb", "-p", help="Perturbation spec(s), as for "
                                                "`fiqa-trt score`."),
    views: int = typer.Option(1, "--views", "-k", help="Views drawn per random spec."),
    agg: str = typer.Option("mean", help="Aggregation of the view cosines: mean, min or median."),
    recipe: options.Recipe = None,
    threads: options.Threads = None,
    backend: options.Backend = "auto",
    precision: options.Precision = "auto",
    device: options.Device = "auto",
    detector: str = typer.Option("hog", help="dlib face detector: hog (fast) or cnn (MMOD)."),
    upsample: int = typer.Option(1, help="Detector upsampling (1 finds faces down to about 40 px)."),
    transport: str = typer.Option("tcp", help="RTSP transport: tcp (RTP in the RTSP connection) or udp."),
    open_timeout: float = typer.Option(10.0, help="URLs: seconds for a connection to deliver its stream; the "
                                       "first connection failing exits with 1."),
    read_timeout: float = typer.Option(5.0, help="URLs: seconds without data before the connection counts as "
                                       "lost (then reconnect)."),
    max_reconnects: int = typer.Option(10, help="URLs: failed reconnection attempts in a row before giving up "
                                       "(backoff 0.5 s, doubling, at most 30 s)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary on standard error."),
) -> None:
    """Gate a camera stream, URL, video or folder of frames on face quality: JSON-lines events per face, per
    track (best shot) and per outage, a summary at the end (also on Ctrl-C and SIGTERM).

    Exit codes: 0 done (also when a stream ended after giving up reconnecting), 1 a URL whose first connection
    failed (refused, or no stream within the open timeout) or a video / folder with no readable frame, 2 a usage
    mistake, 130 Ctrl-C, 143 SIGTERM."""
    from fiqa_trt.engine.align import FaceAligner
    from fiqa_trt.engine.models import model_or_default, open_scorer
    from fiqa_trt.engine.settings import ScoringSettings
    from fiqa_trt.gate.gate import Gate, calibration_for
    from fiqa_trt.gate.network import StreamUnavailable
    from fiqa_trt.gate.streams import kind_of

    setup_logging(False)
    kind_of(source)  # a missing source is a usage mistake, before the model is loaded
    model = model_or_default(model)
    # faces are aligned to the ArcFace template by the detector here: no template check
    scorer = open_scorer(ScoringSettings(model=model, backend=backend, precision=precision, device=device,
                                         threads=threads, perturb=tuple(perturb or ()), views=views, agg=agg,
                                         recipe=recipe, realign="off"))
    calibration = calibration_for(scorer.recipe)
    if not quiet and scorer.recipe is not None:
        err.print(f"{escape(scorer.recipe.describe())} ({escape(scorer.recipe_source)})")
    if scale == "auto":
        scale = "calibrated" if calibration is not None else "raw"
        if calibration is None and threshold is None:
            err.print("[yellow]warning:[/] no 0-100 calibration is known for this model and recipe: the threshold "
                      "is 0.95 on the raw quality (set --threshold)")
    if threshold is None:
        threshold = 50.0 if scale == "calibrated" else 0.95
    gate_ = Gate(scorer, FaceAligner(detector=detector, upsample=upsample, all_faces=True), threshold=threshold,
                 scale=scale, calibration=calibration, events=events, best_dir=best_dir,
                 video_out=video_out, batch_frames=batch_frames, min_iou=min_iou, max_missed=max_missed)
    network = {"transport": transport, "open_timeout": open_timeout, "read_timeout": read_timeout,
               "max_reconnects": max_reconnects}
    terminated: list[int] = []

    def on_sigterm(signum, frame):  # SIGTERM ends the run like Ctrl-C: tracks, summary, then exit 143
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        summary = gate_.run(source, drop=drop, queue_size=queue_size, network=network)
    except StreamUnavailable as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # before the first frame (while connecting): nothing to summarise
        raise typer.Exit(143 if terminated else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not quiet:
        err.print(json.dumps({k: v for k, v in summary.items() if k not in ("event", "time")}))
    if summary["interrupted"]:
        raise typer.Exit(143 if terminated else 130)
    if summary["frames_read"] == 0:  # a file or folder with no readable frame: nothing was done, as in `score`
        err.print(f"[red]error:[/] no frame could be read from {escape(source)}"
                  + (f" ({summary['frames_unreadable']} unreadable)" if summary["frames_unreadable"] else ""))
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(gate)

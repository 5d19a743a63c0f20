"""The HTTP quality service: an ASGI app (FastAPI on uvicorn) in front of one Scorer and a dynamic batcher.

limits.py: what a request may carry and the JSON errors for what it may not; multipart.py: a multipart body read
into its image parts; batcher.py: gathers the images of concurrent requests into batches for the scorer's thread,
in two lanes by cost, within a budget of decoded pixels; metrics.py: the Prometheus metrics; app.py: the routes;
server.py: uvicorn with a read timeout on request headers and a graceful SIGTERM/SIGINT. Needs the `serve` extra (fastapi, uvicorn, prometheus-client,
python-multipart).
"""

"""The HTTP quality service: an ASGI app (FastAPI on uvicorn) in front of one Scorer and a dynamic batcher.

limits.py: what a request may carry and the JSON errors for what it may not; batcher.py: gathers the images of
concurrent requests into batches for the scorer's thread; metrics.py: the Prometheus metrics; app.py: the routes;
server.py: uvicorn with graceful SIGTERM/SIGINT. Needs the `serve` extra (fastapi, uvicorn, prometheus-client,
python-multipart).
"""

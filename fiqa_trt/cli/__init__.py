"""The command line (`fiqa-trt`): `app.py` builds the typer app from one module per command. Nothing imports it."""

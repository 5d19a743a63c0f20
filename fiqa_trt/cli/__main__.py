"""`python -m fiqa_trt.cli`: the same as the `fiqa-trt` command."""

from fiqa_trt.cli.app import main

main()

"""Known models: records keyed by checksum (`registry`: preprocessing, and the packaged recipes and calibrations
in `recipes/*.json`), what a runner needs to feed a model (`model_config`), the reduced-precision ranking checks
that passed (`precision_checks`), the model zoo of architectures and published weights (`zoo`), where weights files
are looked for (`locations`), and downloads with checksum checks (`fetch`)."""

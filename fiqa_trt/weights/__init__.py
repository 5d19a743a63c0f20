"""Known models: preprocessing records keyed by checksum (`registry`), the model zoo of architectures and published
weights (`zoo`), where weights files are looked for (`locations`), and downloads with checksum checks (`fetch`)."""

"""What runs at scoring time, for every command: the settings of a run and the resolver that decides each of them
(`settings`, `resolve`, `recipes`, `session.open_session`, the only constructor of a Scorer); inputs and their
checks (`inputs`), face detection and alignment for photos (`detect`, `align`, `geometry`), the template check
(`template`), perturbations (`perturbations`), the producer side (`batching`, with the memory budget of a batch in
`budget`), the DALI pipeline (`pipeline`, `cpu_fallbacks`), runners (`runners/`), the scorer, output sinks
(`sinks`), the default model (`models`), the device (`device`) and the ranking check of a reduced precision
(`precision`)."""

"""What runs at scoring time: inputs, perturbations, the DALI pipeline, runners, the scorer, output sinks."""

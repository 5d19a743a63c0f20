"""Evaluation of quality scores by face verification: pair protocols, EDC/pAUC, score files, sweeps, pictures.

- `protocols`: pair lists (the shared `a,b,1|-1` format, LFW/XQLFW `pairs.txt`, CPLFW/CALFW pair files) and a
  generator of mated + impostor pairs from identity folders.
- `edc`: verification thresholds, FNMR/FMR, the error-versus-discard curve (EDC) and its partial area (pAUC).
- `external`: quality score files of other methods (CSV, JSON/JSONL, pickle, Parquet) matched to pair images.
- `sweep`: one embedding pass over the pair images for several perturbation specs (originals embedded once).
- `report`: EDC/pAUC of several methods on one pair set, and its JSON / CSV / markdown files.
- `plots`: EDC curves, quality histograms, annotated face grids (matplotlib, PNG and SVG).
- `cli`: the `fiqa-trt eval` and `fiqa-trt viz` commands.
"""

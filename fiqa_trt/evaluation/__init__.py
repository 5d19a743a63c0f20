"""Evaluation of quality scores by face verification, to ISO/IEC 29794-1:2024 conventions: pair protocols, EDC/pAUC,
identity split, bootstrap intervals, score files, sweeps, pictures, and the whole run.

- `protocols`: pair lists (the shared `a,b,1|-1` format, LFW/XQLFW `pairs.txt`, CPLFW/CALFW pair files) and the
  generators from identity folders: `all_mated_pairs` (every mated pair of at most 20 images per identity, ~2M
  random non-mated pairs) and the older `generate_pairs`.
- `edc`: verification thresholds, FNMR/FMR, the error-versus-discard curve (EDC) over the mated comparisons, its
  partial area (pAUC, raw and normalised) and the theoretical-best curve; weighted versions for resamples.
- `split`: the seeded, stable identity split into dev and test halves, and the pairs of each half.
- `bootstrap`: resamples of the identities; intervals of normalised pAUCs and of differences between methods.
- `external`: quality score files of other methods (CSV, JSON/JSONL, pickle, Parquet) matched to pair images.
- `sweep`: one embedding pass over the pair images for several perturbation specs (originals embedded once), the
  pair similarities, the raw-embedding norm as a method.
- `report`: EDC/pAUC of several methods on one pair set (with intervals and differences), and its files.
- `plots`: EDC curves (with the theoretical best), quality histograms, annotated face grids (PNG and SVG).
- `run`: one `fiqa-trt eval` run from an `EvalSettings` (the CLI command is fiqa_trt/cli/eval.py).
- `calibrate`: a recipe fitted for one model (its centre and weights on the dev half, reported on the test half);
  `degradations`: synthetic and realistic degradations of aligned crops, and how often a quality ranks them below
  the face; `crossquality`: the cross-quality protocol (a seeded share of the images degraded); `froq`: FROQ, as a
  method to compare with.

For code that fits or checks a quality on a dev half and reports the test half (e.g. recipe calibration):

    from fiqa_trt.evaluation import bootstrap, edc, protocols, split, sweep
    pairs = protocols.all_mated_pairs(root, max_images=20, nonmated=2_000_000, seed=0)        # Pairs
    dev, test = split.split_pairs(pairs, split.identity_split(pairs.identities(), seed=0))   # Pairs, Pairs
    sim = sweep.pair_similarities(originals_of(dev.keys), dev.a, dev.b)   # (P,) cosine of the original embeddings
    curve = edc.edc(sim, dev.mated, edc.pair_quality(q[dev.a], q[dev.b], "min"), 1e-3)   # q: one per dev.keys
    curve.normalised_pauc(0.3), curve.best_pauc(0.3), curve.fnmr0
    res = bootstrap.identity_resamples(test, count=200, seed=0)
    v = bootstrap.resampled_paucs(res, test, sim_test, {"new": q_new, "norm": q_norm}, fmrs=(1e-3,), limits=(0.3,))
    bootstrap.interval(v[("new", 1e-3, 0.3)]), bootstrap.interval(v[("new", 1e-3, 0.3)] - v[("norm", 1e-3, 0.3)])
    # or the whole report: report.evaluate(test, sim_test, [report.Method(...), ...], bootstrap=200)
"""

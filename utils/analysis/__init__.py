"""The analysis of run folders, above the estimators (Adilova, Geiger & Fischer, ICLR 2023).

The estimators by name (``registry``) and their jobs on a run's saved representations (``estimation``,
on a Dask cluster: ``cluster``), behind the estimation command (``information_plane``); how an entry
of ``IP/estimates.json`` is read (``entries``). The comparison of runs (``comparison``): its groups of
seeds (``run_groups``), the long table (``estimate_table``), the seed aggregates (``seed_aggregate``),
the verdicts on a fall of I(X;Z) with their thresholds (``verdicts``), the markdown summary
(``markdown_summary``) and the merge of comparisons (``merge_comparisons``). Figures: how one
information plane is drawn (``plane_drawing``), which figures a run folder gets (``run_figures``) and a
comparison (``comparison_figures``, ``bracket_figure``), and the page geometry they share
(``figure_layout``).
"""

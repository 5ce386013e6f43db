"""The analysis of run folders, above the estimators: the estimators by name (``registry``), the
estimation command (``information_plane``), the comparison of runs (``comparison``) and their figures
(``figures``, ``plotting``)."""

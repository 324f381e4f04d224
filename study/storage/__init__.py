"""Where a study's results live and what guards them: the three stores and their URIs
(stores, credentials, databases), one driver per study (study_lock), and the disk they are
written to, checked before the start (disk_checks) and watched while the study runs (disk_guard)."""

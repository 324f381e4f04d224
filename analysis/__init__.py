"""Read-only analysis of finished studies: trial tables, figures, reports, exported configs."""

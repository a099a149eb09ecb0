"""Sweeps (``hilctl sweep``): a sweep file's points (:mod:`hilctl.sweep.spec`) trained on a
Dask cluster and recorded in the run store (:mod:`hilctl.sweep.runner`), summarised in a table
(:mod:`hilctl.sweep.summary`) and a figure (:mod:`hilctl.sweep.figures`). ``docs/sweeps.md``
says how to use them."""

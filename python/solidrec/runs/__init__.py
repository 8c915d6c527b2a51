"""Run directories, below training, evaluation and inference (which import from here,
never the reverse; ``lint-imports`` checks it):

- :mod:`~solidrec.runs.layout`: the name of every file a run, its model directory and a
  study hold (:class:`~solidrec.runs.layout.RunDir`);
- :mod:`~solidrec.runs.checkpoint`: atomic, checksummed, code-free checkpoints;
- :mod:`~solidrec.runs.lock`: the lock that keeps two processes out of one run;
- :mod:`~solidrec.runs.config`: building a run's config (every command that trains);
- :mod:`~solidrec.runs.load`: a run's config, dataset and selected weights;
- :mod:`~solidrec.runs.model_dir`: the self-contained model directory, written and read;
- :mod:`~solidrec.runs.report`: finished runs as tables (``solidrec report``).

Submodules are imported on use: ``import solidrec.runs`` stays light.
"""

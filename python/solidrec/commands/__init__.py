"""The ``solidrec`` subcommands, one module per area: :mod:`~solidrec.commands.data`
(prepare, stats, synth, download), :mod:`~solidrec.commands.train` (train, quickstart),
:mod:`~solidrec.commands.evaluate`, :mod:`~solidrec.commands.report` and
:mod:`~solidrec.commands.reproduce`. Each exposes ``add_parser(subparsers)``; the list
the CLI registers is ``solidrec.cli.COMMAND_MODULES``."""

"""The ``netspec`` command line (see :mod:`netspec.cli.main`)."""

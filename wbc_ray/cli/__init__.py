"""`wbc-ray` command line: one module per verb, each a thin shell over a library function.

Every verb module holds its flags beside its handler (``add_arguments`` and ``run``); the flags
several verbs share are in ``_shared``. Defaults come from the settings (``configs/default.yaml``,
``--config``) and from ``TrainConfig``, not from the parser.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]

"""A task kind from outside mill-core, for the tests that prove the ``mill.task_kinds`` registry open to
third parties: ``label_parity`` asks for each image's class index modulo a variant's ``modulus``, and the
``label_echo`` backend answers it from the label it is handed (wrong on purpose below ``wrong_below``).

:data:`SPEC_FILE` is a benchmark using the kind, to pass to ``mill eval --spec``.
"""

from __future__ import annotations

from pathlib import Path

SPEC_FILE = Path(__file__).with_name("parity.toml")

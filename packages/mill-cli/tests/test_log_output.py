"""Each log record printed once: the hub client's retry warnings after open_clip has logged through the root
logger (which used to install a second handler), and Mill's own warnings in its own words."""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stderr

import pytest
from huggingface_hub.utils import logging as hub_logging

from mill.cli.log_output import printed_once

RETRY = "'[Errno -2] Name or service not known' thrown while requesting HEAD https://huggingface.co/x"


def test_a_hub_warning_after_open_clip_logged_is_printed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in a fresh `mill` process: the root logger has no handler (pytest gave it some).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    stderr = io.StringIO()
    (hub_handler,) = hub_logging.get_logger().handlers  # huggingface_hub prints through its own handler
    monkeypatch.setattr(hub_handler, "stream", stderr)
    with redirect_stderr(stderr), printed_once():
        logging.info("Loaded ViT-B-32 model config.")  # what open_clip's factory does first
        hub_logging.get_logger("huggingface_hub.utils._http").warning(RETRY)
        logging.error("Failed to download weights")  # open_clip's own record reaches the root handler
        logging.getLogger("mill.data.download").warning("downloading u: dropped; retrying in 1 s")
    assert stderr.getvalue().splitlines() == [
        RETRY,
        "ERROR:root:Failed to download weights",
        "warning: downloading u: dropped; retrying in 1 s",
    ]
    # The handler lasts as long as the command: nothing is left on the root logger.
    assert logging.getLogger().handlers == []

"""Re-scoring stored multiple-choice answers with the current parser, without running the model.

Pure: a per-sample frame in, a frame out. A parser change (see ``mill.core.mcq.PARSER_VERSION``)
then costs a re-parse of the stored responses, not hours of inference.
"""

from __future__ import annotations

import polars as pl
from attrs import frozen

from mill.core.errors import ResultsError
from mill.core.mcq import UnparsablePolicy, grade_answer, option_letters

RESCORE_INPUT_COLUMNS = ("key", "gold_letter", "options", "response", "parsed_letter")
"""The per-sample MCQ columns a re-score reads; it rewrites ``parsed_letter``, ``prediction`` and
``correct`` (adding the last two if absent)."""


@frozen
class Rescored:
    """A re-scored per-sample frame and how many answers' parsed letter changed.

    ``changed`` counts rows whose ``parsed_letter`` differs from the stored one (a letter becoming
    None, or None becoming a letter, counts). Under the ``random`` policy a prediction may also
    change without the parsed letter changing only if the stored frame was scored with another seed.
    """

    frame: pl.DataFrame
    changed: int


def rescore_mcq(frame: pl.DataFrame, policy: UnparsablePolicy, seed: int) -> Rescored:
    """Re-parse and re-grade every stored response of ``frame``, a per-sample MCQ table.

    Each row's letters are ``A``, ``B``, ... for its ``options`` (option names in letter order),
    graded against ``gold_letter`` with ``policy`` and ``seed`` exactly as at evaluation time. The
    columns ``parsed_letter``, ``prediction`` and ``correct`` are replaced in place; every other
    column, the row order and the column order are kept. A null response counts as empty.

    Raises:
        ResultsError: if ``frame`` lacks one of :data:`RESCORE_INPUT_COLUMNS`.
        ValueError: for an unknown policy.
    """
    missing = [column for column in RESCORE_INPUT_COLUMNS if column not in frame.columns]
    if missing:
        raise ResultsError(
            f"cannot re-score a per-sample table without the column(s) {', '.join(missing)} "
            f"(it has {', '.join(frame.columns) or 'none'}); re-run the evaluation to rebuild it"
        )
    scores = [
        grade_answer(response or "", options, option_letters(len(options)), gold, policy, seed)
        for response, options, gold in zip(
            frame["response"].to_list(), frame["options"].to_list(), frame["gold_letter"].to_list(), strict=True
        )
    ]
    rescored = frame.with_columns(
        pl.Series("parsed_letter", [score.parsed_letter for score in scores], dtype=pl.String),
        pl.Series("prediction", [score.prediction for score in scores], dtype=pl.String),
        pl.Series("correct", [score.correct for score in scores], dtype=pl.Boolean),
    )
    changed = int(frame["parsed_letter"].cast(pl.String).ne_missing(rescored["parsed_letter"]).sum())
    return Rescored(frame=rescored, changed=changed)

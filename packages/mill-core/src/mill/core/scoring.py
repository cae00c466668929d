"""Turning a backend's batch results into per-sample records and the variant's metrics.

Pure: no files, no devices. Records come out sorted by key, so the per-sample table and every
metric are independent of batching, workers and processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
from attrs import frozen

from mill.core.mcq import score_response
from mill.core.metrics import (
    MetricValue,
    accuracy_with_stderr,
    mean_per_class_recall_with_stderr,
    topk_accuracy_with_stderr,
)
from mill.core.spec import McqVariant
from mill.core.task import McqBatchResult, McqTask, ZeroShotBatchResult

ZERO_SHOT_SCHEMA: dict[str, Any] = {
    "key": pl.String,
    "shard": pl.String,
    "gold": pl.Int64,
    "gold_label": pl.String,
    "prediction": pl.Int64,
    "prediction_label": pl.String,
    "top5": pl.List(pl.Int64),
    "correct": pl.Boolean,
}

MCQ_SCHEMA: dict[str, Any] = {
    "key": pl.String,
    "shard": pl.String,
    "gold": pl.Int64,
    "gold_letter": pl.String,
    "options": pl.List(pl.String),
    "option_indices": pl.List(pl.Int64),
    "prompt": pl.String,
    "response": pl.String,
    "parsed_letter": pl.String,
    "prediction": pl.String,
    "correct": pl.Boolean,
}


@frozen
class Scored:
    """Per-sample records (sorted by key), their column schema, and metric name → value."""

    records: Sequence[Mapping[str, Any]]
    schema: Mapping[str, Any]
    metrics: Mapping[str, MetricValue]


def score_zero_shot(
    batches: Iterable[ZeroShotBatchResult], classnames: Sequence[str], metric: str, seed: int
) -> Scored:
    """Records with top-1/top-5 and the metrics ``{metric}`` (top-1), ``acc5`` and
    ``mean_per_class_recall``, each with a bootstrap stderr seeded by ``seed``."""
    records: list[dict[str, Any]] = sorted(
        (
            {
                "key": key,
                "shard": shard,
                "gold": gold,
                "gold_label": classnames[gold],
                "prediction": topk[0],
                "prediction_label": classnames[topk[0]],
                "top5": list(topk[:5]),
                "correct": topk[0] == gold,
            }
            for batch in batches
            for key, shard, gold, topk in zip(batch.keys, batch.shards, batch.golds, batch.topk, strict=True)
        ),
        key=lambda record: record["key"],
    )
    golds = np.array([r["gold"] for r in records], dtype=np.int64)
    top5 = np.array([r["top5"] for r in records], dtype=np.int64)
    metrics = {
        metric: accuracy_with_stderr(np.array([r["correct"] for r in records]), seed),
        "acc5": topk_accuracy_with_stderr(golds, top5, min(5, top5.shape[1]), seed),
        "mean_per_class_recall": mean_per_class_recall_with_stderr(golds, top5[:, 0], seed),
    }
    return Scored(records, ZERO_SHOT_SCHEMA, metrics)


def score_mcq(batches: Iterable[McqBatchResult], task: McqTask, variant: McqVariant, seed: int) -> Scored:
    """Records with the parsed and scored letter; metrics ``{variant.metric}`` and ``unparsed_rate``."""
    records: list[dict[str, Any]] = []
    for batch in batches:
        for key, shard, gold, prompt, response in zip(
            batch.keys, batch.shards, batch.golds, batch.prompts, batch.responses, strict=True
        ):
            question = task.question(key, gold)
            names = [task.classnames[i] for i in question.option_indices]
            score = score_response(response, question, names, variant.unparsed.value, seed)
            records.append(
                {
                    "key": key,
                    "shard": shard,
                    "gold": gold,
                    "gold_letter": question.gold_letter,
                    "options": names,
                    "option_indices": list(question.option_indices),
                    "prompt": prompt,
                    "response": response,
                    "parsed_letter": score.parsed_letter,
                    "prediction": score.prediction,
                    "correct": score.correct,
                }
            )
    records.sort(key=lambda record: record["key"])
    metrics = {
        variant.metric: accuracy_with_stderr(np.array([r["correct"] for r in records]), seed),
        "unparsed_rate": accuracy_with_stderr(np.array([r["parsed_letter"] is None for r in records]), seed),
    }
    return Scored(records, MCQ_SCHEMA, metrics)

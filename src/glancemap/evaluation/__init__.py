"""Faithfulness benchmark: every method on the same backbone, images and metrics.

Per-image results stream to ``results.jsonl`` (one line per method and image,
flushed per batch), so a killed run resumes where it stopped and never
recomputes a finished image. :func:`summarize` turns the lines into a table of
means with standard errors, seconds per map and passes per map.
"""

from .grid import GridConfig, run_grid_evaluation
from .runner import DEFAULT_METHODS, evaluate
from .scoring import MetricConfig, score_batch
from .stream import EvaluationMismatchError, Run, plan_methods, run_evaluation
from .tables import (
    BETTER,
    COST_COLUMNS,
    SUMMARY_COLUMNS,
    mean_and_se,
    paired_differences,
    read_results,
    summarize,
    write_paired_table,
    write_tables,
)

__all__ = [
    "evaluate",
    "GridConfig",
    "run_grid_evaluation",
    "DEFAULT_METHODS",
    "MetricConfig",
    "score_batch",
    "EvaluationMismatchError",
    "Run",
    "plan_methods",
    "run_evaluation",
    "SUMMARY_COLUMNS",
    "COST_COLUMNS",
    "BETTER",
    "read_results",
    "mean_and_se",
    "summarize",
    "write_tables",
    "paired_differences",
    "write_paired_table",
]

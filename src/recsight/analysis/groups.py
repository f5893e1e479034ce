"""Minimum group size: no published figure describes fewer than k distinct users.

The rule lives in the Ibis expressions the analysis builds (`large_groups` filters an
aggregate on its distinct-user column, `merge_small` relabels small groups as "other" before
aggregating), so the DuckDB and the Spark engine apply it identically. Rows that show one user
(a suspected bot, an example event) are left out while k > 1 unless examples are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from recsight.analysis.source import AnalysisSource

OTHER = "other"


@dataclass
class GroupPolicy:
    """The minimum group size applied to an analysis, and what it suppressed so far.

    Attributes:
        min_group_size: k; groups of fewer distinct users are suppressed (1 turns it off).
        show_examples: keep rows that show individual users even when k > 1.
        suppressed: rows suppressed (or merged into "other") per place in the report.
    """

    min_group_size: int = 1
    show_examples: bool = False
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.min_group_size > 1

    @property
    def examples_allowed(self) -> bool:
        """Whether rows about one user may be shown."""
        return self.show_examples or not self.active

    def note(self, where: str, rows: int) -> None:
        if rows:
            self.suppressed[where] = self.suppressed.get(where, 0) + int(rows)


class GroupPrivacy(BaseModel):
    """What report.json says about the minimum group size."""

    min_group_size: int
    show_examples: bool
    suppressed_rows: int  # rows suppressed or merged into "other", in all
    suppressed_by_place: dict[str, int]  # e.g. {"popularity.top_items": 3}


def summary(policy: GroupPolicy) -> GroupPrivacy:
    return GroupPrivacy(
        min_group_size=policy.min_group_size,
        show_examples=policy.show_examples,
        suppressed_rows=sum(policy.suppressed.values()),
        suppressed_by_place=dict(sorted(policy.suppressed.items())),
    )


def _count(src: AnalysisSource, condition: ir.BooleanColumn) -> int:
    """How many rows meet `condition` (0 for no rows: the sum over nothing is NULL)."""
    n = src.scalar(condition.cast("int64").sum())
    import pandas as pd

    return 0 if n is None or pd.isna(n) else int(n)


def large_groups(src: AnalysisSource, agg: ir.Table, users: str, where: str) -> ir.Table:
    """`agg` without its rows whose distinct-user column `users` is below k; the number of
    rows dropped is counted under `where`."""
    k = src.privacy.min_group_size
    if k <= 1:
        return agg
    agg = src.materialize(agg)  # counted and then read: computed once
    src.privacy.note(where, _count(src, agg[users] < k))
    return agg.filter(agg[users] >= k)


def merge_small(
    src: AnalysisSource, table: ir.Table, key: str, where: str, users: str = "user_idx"
) -> ir.Table:
    """`table` with `key` replaced by "other" in the rows whose `key` value covers fewer
    than k distinct `users` (the groups merged are counted under `where`)."""
    import ibis

    k = src.privacy.min_group_size
    if k <= 1:
        return table
    sizes = src.materialize(table.group_by(key).aggregate(_group_users=table[users].nunique()))
    src.privacy.note(where, _count(src, sizes._group_users < k))
    big = sizes.filter(sizes._group_users >= k).select(_big_key=sizes[key])
    j = table.left_join(big, table[key] == big._big_key)
    label = ibis.ifelse(j._big_key.isnull(), ibis.literal(OTHER), j[key].cast("string"))
    return j.mutate(**{key: label}).drop("_big_key")


def blank_small(
    policy: GroupPolicy, counts: Sequence[int], users: Sequence[int], where: str
) -> list[int | None]:
    """`counts` (cells of a histogram or matrix) with None where the cell's `users`, the
    distinct users it describes, are between 1 and k-1; an empty cell describes nobody and
    stays. The cells blanked are counted under `where`."""
    k = policy.min_group_size
    small = [0 < u < k for u in users]
    policy.note(where, sum(small))
    return [None if s else int(c) for c, s in zip(counts, small, strict=True)]

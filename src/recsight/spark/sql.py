"""Ibis expressions compiled to Spark SQL, with the local engine's semantics where the two
dialects differ.

Ibis's PySpark compiler turns `epoch_seconds()` into ``UNIX_TIMESTAMP``, which drops the
fraction of a second, while DuckDB's ``EPOCH`` keeps it; the analysis's durations (funnel
step times, session lengths, ages) would then differ by up to a second. Here it becomes
``DOUBLE(UNIX_MICROS(ts)) / 1e6``: the same double DuckDB computes, to the last bit (Spark
would divide an integer by the literal in exact decimal arithmetic).

Ibis writes a subexpression used twice as a common table expression (``WITH t AS (...)``).
Spark does not match a CTE's body against cached DataFrames (in 4.3 the report's queries with
a ``WITH`` read the layout's Parquet files again instead of the persisted events), so the CTEs
are inlined as subqueries: Spark inlines them itself when it optimizes, after the cache lookup.
"""

from __future__ import annotations

import functools

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
from sqlglot import exp


@functools.cache
def _compiler():
    _ = ibis.pyspark  # loads the backend, which registers the options its compiler reads
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    class Compiler(PySparkCompiler):
        def visit_ExtractEpochSeconds(self, op, *, arg):
            # a double numerator: Spark would divide by the decimal literal exactly
            micros = self.cast(self.f.unix_micros(self.cast(arg, dt.timestamp)), dt.float64)
            return micros / 1_000_000.0

    return Compiler()


def to_spark_sql(expr: ir.Expr) -> str:
    """Spark SQL for an (unbound) Ibis expression."""
    compiler = _compiler()
    out = _inline_ctes(compiler.to_sqlglot(expr.unbind()))
    return out.sql(dialect=compiler.dialect)


def _inline_ctes(tree: exp.Expression) -> exp.Expression:
    """`tree` with every ``WITH`` clause's tables substituted, as subqueries, where they are
    read (later CTEs of the same clause included)."""
    while (with_ := tree.find(exp.With)) is not None:
        owner = with_.parent
        ctes = list(with_.expressions)
        owner.set(with_.arg_key, None)
        for i, cte in enumerate(ctes):
            readers = [c.this for c in ctes[i + 1 :]] + [owner]
            for reader in readers:
                for table in list(reader.find_all(exp.Table)):
                    if table.name == cte.alias and not table.args.get("db"):
                        alias = exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
                        table.replace(exp.Subquery(this=cte.this.copy(), alias=alias))
    return tree

"""Ibis expressions compiled to Spark SQL, with the local engine's semantics where the two
dialects differ.

Ibis's PySpark compiler turns `epoch_seconds()` into ``UNIX_TIMESTAMP``, which drops the
fraction of a second, while DuckDB's ``EPOCH`` keeps it; the analysis's durations (funnel
step times, session lengths, ages) would then differ by up to a second. Here it becomes
``DOUBLE(UNIX_MICROS(ts)) / 1e6``: the same double DuckDB computes, to the last bit (Spark
would divide an integer by the literal in exact decimal arithmetic).
"""

from __future__ import annotations

import functools

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir


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
    out = compiler.to_sqlglot(expr.unbind())
    return out.sql(dialect=compiler.dialect)

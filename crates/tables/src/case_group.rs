//! Grouping by a `CASE` that names buckets, done on the bucket's number.
//!
//! Dashboards group rows into named buckets: `CASE WHEN EXTRACT(DOW FROM sales_date) IN (0, 6)
//! THEN 'weekend' ELSE 'weekday' END`. DataFusion evaluates such a `CASE` into a text column,
//! one string per row, and then hashes those strings to find each row's group: together a
//! third of the weekday-versus-weekend query at 10M rows, for two groups. [`CaseGroupLabels`]
//! groups by the same `CASE` with each distinct label replaced by its number (`THEN 0 ELSE 1`)
//! and puts the labels back on the few grouped rows, in a projection above the aggregate that
//! keeps the aggregate's column names, types and nullability. Two branches with the same label
//! get the same number, so the groups are exactly the original ones.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::logical_expr::expr::Case;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection, lit};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The logical optimizer rule: an aggregate grouped by a `CASE` whose results (every `THEN`,
/// and the `ELSE` if there is one) are text literals, none of them a `THEN NULL`, groups by
/// the labels' numbers instead; a projection above gives each group its label.
#[derive(Debug, Default)]
pub struct CaseGroupLabels;

impl OptimizerRule for CaseGroupLabels {
    fn name(&self) -> &str {
        "case_group_labels"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let buckets: Vec<Option<Buckets>> = aggregate.group_expr.iter().map(Buckets::of).collect();
        // Grouping sets lay their output out differently; they are left as they are.
        let grouping_sets = aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)));
        if grouping_sets || buckets.iter().all(Option::is_none) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let group_expr = aggregate
            .group_expr
            .iter()
            .zip(&buckets)
            .map(|(expr, b)| {
                b.as_ref()
                    .map_or_else(|| expr.clone(), |b| b.numbered.clone())
            })
            .collect();
        // Two buckets with the same conditions but other labels number alike, and the
        // aggregate keeps one of equal keys: such a grouping is left as it is.
        let numbered = Aggregate::try_new(
            Arc::clone(&aggregate.input),
            group_expr,
            aggregate.aggr_expr.clone(),
        );
        let numbered = match numbered {
            Ok(n) if n.schema.fields().len() == aggregate.schema.fields().len() => n,
            _ => return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate))),
        };
        // The aggregate's columns in their order: the groups first, then the aggregates.
        let columns = (0..aggregate.schema.fields().len())
            .map(|i| {
                let column = Expr::Column(Column::from(numbered.schema.qualified_field(i)));
                match buckets.get(i).and_then(Option::as_ref) {
                    Some(b) => {
                        let (qualifier, field) = aggregate.schema.qualified_field(i);
                        b.labelled(column)
                            .alias_qualified(qualifier.cloned(), field.name())
                    }
                    None => column,
                }
            })
            .collect();
        let projection = Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(numbered)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// A bucketing `CASE` taken apart.
struct Buckets {
    /// The `CASE` with the number of its label in place of each result.
    numbered: Expr,
    /// The label of each number: the original literal expressions.
    labels: Vec<Expr>,
    /// The original `ELSE` (a literal), and the number it has if it is not null.
    otherwise: Option<(Expr, Option<i32>)>,
}

impl Buckets {
    /// `expr` taken apart, if it is a `CASE` with text literal results and no `THEN NULL`
    /// (named or not: the projection above gives it the aggregate's column name anyway).
    fn of(expr: &Expr) -> Option<Buckets> {
        let expr = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            _ => expr,
        };
        let Expr::Case(case) = expr else {
            return None;
        };
        let mut labels: Vec<Expr> = Vec::new();
        let mut number = |label: &Expr| -> Option<i32> {
            let Expr::Literal(value, _) = label else {
                return None;
            };
            if !is_text(value) {
                return None;
            }
            let known = labels
                .iter()
                .position(|l| matches!(l, Expr::Literal(v, _) if v == value));
            let n = known.unwrap_or_else(|| {
                labels.push(label.clone());
                labels.len() - 1
            });
            i32::try_from(n).ok()
        };
        let mut when_then = Vec::with_capacity(case.when_then_expr.len());
        for (when, then) in &case.when_then_expr {
            if matches!(then.as_ref(), Expr::Literal(v, _) if v.is_null()) {
                return None;
            }
            when_then.push((when.clone(), Box::new(lit(number(then)?))));
        }
        let otherwise = match case.else_expr.as_deref() {
            None => None,
            Some(e @ Expr::Literal(v, _)) if v.is_null() && is_text(v) => Some((e.clone(), None)),
            Some(e) => Some((e.clone(), Some(number(e)?))),
        };
        let numbered = Expr::Case(Case::new(
            case.expr.clone(),
            when_then,
            otherwise
                .as_ref()
                .and_then(|(_, n)| n.map(|n| Box::new(lit(n)))),
        ));
        Some(Buckets {
            numbered,
            labels,
            otherwise,
        })
    }

    /// `CASE number WHEN 0 THEN label0 ... ELSE label END` on the grouped `number` column: the
    /// numbers of the `ELSE` label fall to the `ELSE`, which is the original one, so the
    /// result has the original type and nullability.
    fn labelled(&self, number: Expr) -> Expr {
        let else_number = self.otherwise.as_ref().and_then(|(_, n)| *n);
        let when_then = self
            .labels
            .iter()
            .enumerate()
            .filter(|(n, _)| Some(*n as i32) != else_number)
            .map(|(n, label)| (Box::new(lit(n as i32)), Box::new(label.clone())))
            .collect();
        Expr::Case(Case::new(
            Some(Box::new(number)),
            when_then,
            self.otherwise.as_ref().map(|(e, _)| Box::new(e.clone())),
        ))
    }
}

fn is_text(value: &ScalarValue) -> bool {
    matches!(
        value.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

#[cfg(test)]
mod tests {
    use crate::testing::run;
    use datafusion::prelude::SessionContext;

    /// A session with the rule and one without, over the same rows: `d` runs over two weeks
    /// with a null, `s` over texts with a null.
    async fn sessions() -> (SessionContext, SessionContext) {
        let with = crate::session(Default::default(), Default::default());
        let without = SessionContext::new();
        let rows = "CREATE VIEW t AS SELECT d, s, d % 5 AS k \
                    FROM (SELECT value AS d, \
                                 CASE WHEN value % 4 = 0 THEN NULL ELSE 'x' || (value % 3) END AS s \
                          FROM generate_series(1, 14) AS g(value)) \
                    UNION ALL SELECT NULL, NULL, NULL";
        for ctx in [&with, &without] {
            ctx.sql(rows).await.unwrap().collect().await.unwrap();
        }
        (with, without)
    }

    /// Every shape the rule takes gives DataFusion's own answer, with the same column
    /// names, and groups by numbers; shapes it leaves alone are left alone.
    #[tokio::test]
    async fn bucketed_groups_match_datafusion() {
        let (with, without) = sessions().await;
        let rewritten = [
            // Two labels, the shape of the weekday-versus-weekend query, with HAVING and
            // ORDER BY on the label.
            "SELECT CASE WHEN d % 7 IN (0, 6) THEN 'weekend' ELSE 'weekday' END AS day_type, \
                    COUNT(*) AS n, SUM(d) AS total FROM t \
             GROUP BY CASE WHEN d % 7 IN (0, 6) THEN 'weekend' ELSE 'weekday' END \
             HAVING COUNT(*) > 1 ORDER BY day_type",
            // Repeated labels, the ELSE repeating a THEN, and a null condition.
            "SELECT CASE WHEN d < 4 THEN 'low' WHEN d < 8 THEN 'mid' WHEN d < 10 THEN 'low' \
                    ELSE 'mid' END AS b, COUNT(*) AS n FROM t GROUP BY 1 ORDER BY 1",
            // No ELSE, and an ELSE NULL: the missed rows group under null.
            "SELECT CASE WHEN d > 10 THEN 'big' END AS b, COUNT(*) AS n FROM t \
             GROUP BY 1 ORDER BY 1 NULLS FIRST",
            "SELECT CASE WHEN d > 10 THEN 'big' WHEN d > 5 THEN 'some' ELSE NULL END AS b, \
                    COUNT(*) AS n FROM t GROUP BY 1 ORDER BY 1 NULLS FIRST",
            // CASE on a value, next to another group and used unnamed in the SELECT.
            "SELECT k, CASE s WHEN 'x0' THEN 'zero' WHEN 'x1' THEN 'one' ELSE 'other' END, \
                    COUNT(*) AS n FROM t GROUP BY k, 2 ORDER BY 1 NULLS FIRST, 2",
        ];
        for sql in rewritten {
            let (ours, plan) = run(&with, sql).await;
            let (theirs, _) = run(&without, sql).await;
            assert_eq!(ours, theirs, "{sql}\n{plan}");
            assert!(plan.contains("THEN Int32(0)"), "{sql}\n{plan}");
        }
        let left = [
            // The same condition twice with other labels: the numbered CASEs would clash.
            "SELECT CASE WHEN d > 10 THEN 'big' ELSE 'small' END AS b, \
                    CASE WHEN d > 10 THEN 'large' ELSE 'little' END AS c, COUNT(*) AS n \
             FROM t GROUP BY 1, 2 ORDER BY 1, 2",
            // A THEN NULL next to an ELSE label would need a null number.
            "SELECT CASE WHEN d > 10 THEN NULL ELSE 'small' END AS b, COUNT(*) AS n FROM t \
             GROUP BY 1 ORDER BY 1 NULLS FIRST",
            // A result that is not a literal, and labels that are not text.
            "SELECT CASE WHEN d > 10 THEN s ELSE 'small' END AS b, COUNT(*) AS n FROM t \
             GROUP BY 1 ORDER BY 1 NULLS FIRST",
            "SELECT CASE WHEN d > 10 THEN 1 ELSE 2 END AS b, COUNT(*) AS n FROM t \
             GROUP BY 1 ORDER BY 1",
        ];
        for sql in left {
            let (ours, plan) = run(&with, sql).await;
            let (theirs, _) = run(&without, sql).await;
            assert_eq!(ours, theirs, "{sql}\n{plan}");
            assert!(!plan.contains("THEN Int32(0)"), "{sql}\n{plan}");
        }
    }
}

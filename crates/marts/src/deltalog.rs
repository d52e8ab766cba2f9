//! Reading a Delta table's commit log directly: which `fact_sales` months a range of commits
//! touched (from the partition values of their `add` and `remove` actions), and the metadata a
//! commit carries. Anything the log cannot answer for certain is reported as a reason to rebuild
//! in full, never guessed.

use crate::Result;
use crate::model::YearMonth;
use shoplake_storage::Lake;
use shoplake_tables::TableId;
use std::collections::BTreeSet;

fn commit_path(lake: &Lake, id: &TableId, version: i64) -> object_store::path::Path {
    lake.path(
        id.zone,
        &format!("{}/_delta_log/{version:020}.json", id.name),
    )
}

/// The lines of one commit, `None` when the commit file is gone (log retention).
async fn commit_actions(
    lake: &Lake,
    id: &TableId,
    version: i64,
) -> Result<Option<Vec<serde_json::Value>>> {
    let bytes = match lake.get(&commit_path(lake, id, version)).await {
        Ok(b) => b,
        Err(shoplake_storage::StorageError::Store(object_store::Error::NotFound { .. })) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The months of `fact_sales` whose data changed in commits `after + 1 ..= upto`.
/// `Ok(Err(reason))` when the log cannot tell (a commit is gone, the schema or partitioning
/// changed, an action without the month's partition values).
/// A table's partition columns and schema (as the JSON of its `schemaString`).
pub type Layout = (Vec<String>, serde_json::Value);

pub async fn touched_months(
    lake: &Lake,
    id: &TableId,
    after: i64,
    upto: i64,
    baseline: Option<&Layout>,
) -> Result<std::result::Result<BTreeSet<YearMonth>, String>> {
    let mut months = BTreeSet::new();
    for version in after + 1..=upto {
        let Some(actions) = commit_actions(lake, id, version).await? else {
            return Ok(Err(format!(
                "commit {version} of {} is no longer in its log",
                id.display()
            )));
        };
        for action in actions {
            if let Some(meta) = action.get("metaData") {
                // A RESTORE restates the metadata; only a different layout is a change.
                let partitions: Option<Vec<String>> = meta
                    .get("partitionColumns")
                    .and_then(|p| serde_json::from_value(p.clone()).ok());
                let schema: Option<serde_json::Value> = meta
                    .get("schemaString")
                    .and_then(|s| s.as_str())
                    .and_then(|s| serde_json::from_str(s).ok());
                let same = match (baseline, partitions, schema) {
                    (Some((bp, bs)), Some(p), Some(s)) => *bp == p && *bs == s,
                    _ => false,
                };
                if !same {
                    return Ok(Err(format!(
                        "commit {version} of {} changed its schema or partitioning",
                        id.display()
                    )));
                }
                continue;
            }
            let Some(file) = action.get("add").or_else(|| action.get("remove")) else {
                continue;
            };
            // Files rewritten without changing data (optimize) touch no month.
            if file.get("dataChange").and_then(|d| d.as_bool()) == Some(false) {
                continue;
            }
            let part = |name: &str| {
                file.get("partitionValues")
                    .and_then(|p| p.get(name))
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<i64>().ok())
            };
            match (part("year"), part("month")) {
                (Some(y), Some(m)) => match YearMonth::new(y as i32, m as u32) {
                    Some(ym) => {
                        months.insert(ym);
                    }
                    None => {
                        return Ok(Err(format!(
                            "commit {version} of {} has a file in partition year={y}/month={m}",
                            id.display()
                        )));
                    }
                },
                _ => {
                    return Ok(Err(format!(
                        "commit {version} of {} has a file without year/month partition values",
                        id.display()
                    )));
                }
            }
        }
    }
    Ok(Ok(months))
}

/// The `commitInfo` of a commit, `None` when the commit or its info is gone.
pub async fn commit_info(
    lake: &Lake,
    id: &TableId,
    version: i64,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(actions) = commit_actions(lake, id, version).await? else {
        return Ok(None);
    };
    Ok(actions.into_iter().find_map(|a| match a {
        serde_json::Value::Object(mut o) => match o.remove("commitInfo") {
            Some(serde_json::Value::Object(info)) => Some(info),
            _ => None,
        },
        _ => None,
    }))
}

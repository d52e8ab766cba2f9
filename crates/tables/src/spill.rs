//! A partitioned append whose memory does not grow with the number of partitions.
//!
//! Rows of a partitioned table arrive in any order (sales of every region and month in every
//! file). A Parquet writer per partition, all open at once, costs about 25 MB each (a row
//! group being encoded, zstd contexts for every column, upload buffers), so a year of data
//! over six regions would need gigabytes. Instead the rows are first spread over one spill
//! file per partition (Arrow IPC in a temporary folder, cheap to write and usually still in
//! the page cache when read back), then the partitions are encoded a few at a time, each
//! writer closed before the next opens, and all their files land in one Delta commit.

use crate::{BatchResult, Result, TableError, TableId, Tables};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::util::display::array_value_to_string;
use deltalake::DeltaTableError;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, StructType};
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::protocol::{DeltaOperation, SaveMode};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many partitions are encoded at the same time.
const ENCODERS: usize = 2;
/// Write buffer of each partition's spill file.
const SPILL_BUFFER: usize = 64 * 1024;
/// Rows per row group of the files written here. Only [`ENCODERS`] writers are open, so a
/// row group can be eight times DuckDB's 122,880 rows (about 50 MB of encoded pages each for
/// `fact_sales`): a reader sets up each row group's column readers (a zstd context per column
/// chunk among them), a tenth of a dashboard query's time at the smaller size.
const ROW_GROUP_ROWS: usize = 1 << 20;

struct Part {
    path: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
    rows: u64,
}

/// Rows for one commit of a partitioned table, spread over spill files by partition.
pub struct PartitionedAppend {
    id: TableId,
    schema: SchemaRef,
    partitions: Vec<String>,
    dir: tempfile::TempDir,
    /// By partition path (`region=North/year=2025/month=1`), ordered for a stable layout.
    parts: BTreeMap<String, Part>,
    rows: u64,
}

impl PartitionedAppend {
    /// Spill files go to a new temporary folder under `spill_dir`, removed when this is
    /// dropped (after the commit, or when the write is abandoned).
    pub fn new(
        id: &TableId,
        schema: SchemaRef,
        partitions: &[&str],
        spill_dir: &Path,
    ) -> Result<Self> {
        let io = |e: std::io::Error| spill_error(id, spill_dir, e);
        std::fs::create_dir_all(spill_dir).map_err(io)?;
        let dir = tempfile::Builder::new()
            .prefix("spill-")
            .tempdir_in(spill_dir)
            .map_err(io)?;
        Ok(PartitionedAppend {
            id: id.clone(),
            schema,
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
            dir,
            parts: BTreeMap::new(),
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Add a batch: its rows go to the spill file of their partition.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let engine = |e: datafusion::arrow::error::ArrowError| TableError::Engine {
            table: self.id.display(),
            source: Box::new(e.into()),
        };
        let columns: Vec<ArrayRef> = self
            .partitions
            .iter()
            .map(|p| {
                batch
                    .column_by_name(p)
                    .cloned()
                    .ok_or_else(|| TableError::Engine {
                        table: self.id.display(),
                        source: Box::new(datafusion::error::DataFusionError::Plan(format!(
                            "partition column {p} is missing from the batch"
                        ))),
                    })
            })
            .collect::<Result<_>>()?;
        let sort: Vec<SortColumn> = columns
            .iter()
            .map(|c| SortColumn {
                values: c.clone(),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&sort, None).map_err(engine)?;
        let sorted = take_record_batch(batch, &order).map_err(engine)?;
        let keys: Vec<ArrayRef> = self
            .partitions
            .iter()
            .map(|p| sorted.column_by_name(p).expect("checked above").clone())
            .collect();
        let ranges = datafusion::arrow::compute::partition(&keys).map_err(engine)?;
        for range in ranges.ranges() {
            let mut key = String::new();
            for (name, col) in self.partitions.iter().zip(&keys) {
                if !key.is_empty() {
                    key.push('/');
                }
                let value = array_value_to_string(col, range.start).map_err(engine)?;
                key.push_str(&format!("{name}={value}"));
            }
            let slice = sorted.slice(range.start, range.end - range.start);
            let part = match self.parts.get_mut(&key) {
                Some(p) => p,
                None => {
                    let path = self.dir.path().join(format!("{}.arrow", self.parts.len()));
                    let file = File::create(&path)
                        .map_err(|e| spill_error(&self.id, self.dir.path(), e))?;
                    let writer = StreamWriter::try_new_with_options(
                        BufWriter::with_capacity(SPILL_BUFFER, file),
                        &self.schema,
                        spill_options().map_err(engine)?,
                    )
                    .map_err(engine)?;
                    self.parts.entry(key).or_insert(Part {
                        path,
                        writer,
                        rows: 0,
                    })
                }
            };
            crate::fault::spill().map_err(|e| spill_error(&self.id, self.dir.path(), e))?;
            part.writer.write(&slice).map_err(|e| match e {
                // A full disk, most often: say where the spill files are and what to do.
                datafusion::arrow::error::ArrowError::IoError(_, io) => {
                    spill_error(&self.id, self.dir.path(), io)
                }
                e => engine(e),
            })?;
            part.rows += slice.num_rows() as u64;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Read one column of every row pushed so far (the spill files are flushed first).
    pub fn scan_column(&mut self, name: &str, mut f: impl FnMut(&ArrayRef)) -> Result<()> {
        let engine = |e: datafusion::arrow::error::ArrowError| TableError::Engine {
            table: self.id.display(),
            source: Box::new(e.into()),
        };
        let index = self.schema.index_of(name).map_err(engine)?;
        for part in self.parts.values_mut() {
            part.writer.flush().map_err(engine)?;
            let file =
                File::open(&part.path).map_err(|e| spill_error(&self.id, self.dir.path(), e))?;
            let reader = StreamReader::try_new(
                BufReader::with_capacity(SPILL_BUFFER, file),
                Some(vec![index]),
            )
            .map_err(engine)?;
            for batch in reader {
                f(batch.map_err(engine)?.column(0));
            }
        }
        Ok(())
    }

    /// Read some columns of every row pushed so far, a batch at a time, in the order of
    /// `names` (the spill files are flushed first). Memory is one batch of those columns.
    pub fn scan_columns(&mut self, names: &[&str], mut f: impl FnMut(&RecordBatch)) -> Result<()> {
        let engine = |e: datafusion::arrow::error::ArrowError| TableError::Engine {
            table: self.id.display(),
            source: Box::new(e.into()),
        };
        let indices = names
            .iter()
            .map(|n| self.schema.index_of(n))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(engine)?;
        for part in self.parts.values_mut() {
            part.writer.flush().map_err(engine)?;
            let file =
                File::open(&part.path).map_err(|e| spill_error(&self.id, self.dir.path(), e))?;
            let reader = StreamReader::try_new(
                BufReader::with_capacity(SPILL_BUFFER, file),
                Some(indices.clone()),
            )
            .map_err(engine)?;
            for batch in reader {
                let batch = batch.map_err(engine)?;
                // Put the columns in the order asked for, whatever order the reader gives.
                let columns = names
                    .iter()
                    .map(|n| batch.column_by_name(n).cloned())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        engine(datafusion::arrow::error::ArrowError::SchemaError(
                            "a projected column is missing".into(),
                        ))
                    })?;
                let schema = self.schema.project(&indices).map_err(engine)?;
                f(&RecordBatch::try_new(Arc::new(schema), columns).map_err(engine)?);
            }
        }
        Ok(())
    }

    /// Take batches from `input` until it closes. An `Err` in the stream abandons the write
    /// (the spill files go with `self`).
    pub async fn receive(mut self, mut input: mpsc::Receiver<BatchResult>) -> Result<Self> {
        while let Some(batch) = input.recv().await {
            let batch = batch.map_err(|source| TableError::Engine {
                table: self.id.display(),
                source: Box::new(source),
            })?;
            // Splitting and spilling is quick CPU work; the producer runs on another thread.
            tokio::task::block_in_place(|| self.push(&batch))?;
        }
        Ok(self)
    }

    /// Encode every partition into Parquet files of the table and commit them all at once.
    /// Returns the new version. `progress` is called with the rows of each partition written.
    pub async fn commit(
        mut self,
        tables: &Tables,
        run_id: i64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<i64> {
        let id = self.id.clone();
        let delta = Tables::delta_err(&id);
        let engine = |e: datafusion::arrow::error::ArrowError| TableError::Engine {
            table: id.display(),
            source: Box::new(e.into()),
        };
        let parts: Vec<_> = std::mem::take(&mut self.parts).into_values().collect();
        let mut files = Vec::with_capacity(parts.len());
        for mut p in parts {
            p.writer.finish().map_err(engine)?;
            files.push((p.path, p.rows));
        }

        crate::fault::storage(&id)?;
        // A new table is created by the same commit that adds the files.
        let existing = tables.open(&id).await?;
        let is_new = existing.is_none();
        let table = match existing {
            Some(t) => t,
            None => tables.handle(&id).await?,
        };
        let store = table.log_store().object_store(None);
        let stats = if is_new {
            WriterStatsConfig::new(Default::default(), None)
        } else {
            WriterStatsConfig::from_config(
                table
                    .snapshot()
                    .map_err(&delta)?
                    .snapshot()
                    .table_configuration(),
            )
        };
        let config = WriterConfig::new(
            self.schema.clone(),
            self.partitions.clone(),
            Some(Tables::writer_properties_with(ROW_GROUP_ROWS)),
            NonZeroU64::new(tables.target_file_size),
            None,
            stats.num_indexed_cols,
            stats.stats_columns,
        );

        // A few partitions at a time, each on its own task so the encoders use every core.
        let mut adds = Vec::new();
        let mut pending = files.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < ENCODERS {
                let Some((path, rows)) = pending.next() else {
                    break;
                };
                let (store, config, table_name) = (store.clone(), config.clone(), id.display());
                running.spawn(async move {
                    let result = encode(&path, store, config).await;
                    (result.map_err(|e| (table_name, e)), rows)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let (result, rows) = done.map_err(|e| TableError::Engine {
                table: id.display(),
                source: Box::new(datafusion::error::DataFusionError::External(Box::new(e))),
            })?;
            let written = result.map_err(|(table, source)| TableError::Delta {
                table,
                source: Box::new(source),
            })?;
            progress(rows);
            adds.extend(written.into_iter().map(Action::Add));
        }

        let properties = Tables::commit_properties(run_id, "write");
        if is_new {
            let columns: StructType =
                self.schema
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|e| TableError::Engine {
                        table: id.display(),
                        source: Box::new(e.into()),
                    })?;
            let table = table
                .create()
                .with_columns(columns.fields().cloned())
                .with_partition_columns(self.partitions.clone())
                .with_table_name(id.display())
                .with_commit_properties(properties)
                .with_actions(adds)
                .await
                .map_err(&delta)?;
            return Ok(table.version().unwrap_or(0) as i64);
        }
        let snapshot = table.snapshot().map_err(&delta)?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(self.partitions.clone()),
            predicate: None,
        };
        let commit = CommitBuilder::from(properties)
            .with_actions(adds)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(&delta)?;
        Ok(commit.version() as i64)
    }
}

/// Write one partition's spill file as Parquet files of the table.
async fn encode(
    path: &Path,
    store: deltalake::logstore::ObjectStoreRef,
    config: WriterConfig,
) -> std::result::Result<Vec<deltalake::kernel::Add>, DeltaTableError> {
    let file = File::open(path).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    let reader = StreamReader::try_new(BufReader::with_capacity(SPILL_BUFFER, file), None)?;
    let mut writer = DeltaWriter::new(store, config);
    for batch in reader {
        writer.write(&batch?).await?;
    }
    writer.close().await
}

/// Spill files are LZ4-compressed: a whole load passes through them (at 50M rows, uncompressed
/// Arrow took more than the free disk of the machine that measured it), and LZ4 costs little
/// next to the Parquet encoding that reads them back.
fn spill_options() -> std::result::Result<IpcWriteOptions, datafusion::arrow::error::ArrowError> {
    IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))
}

fn spill_error(id: &TableId, dir: &Path, e: std::io::Error) -> TableError {
    TableError::Delta {
        table: id.display(),
        source: Box::new(DeltaTableError::Generic(format!(
            "cannot write spill files under {}: {e} (free some disk space there, or set \
             SHOPLAKE_TMP to a folder with room)",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, start: i64, n: i64) -> RecordBatch {
        let ids: Vec<i64> = (start..start + n).collect();
        let region: Vec<&str> = ids
            .iter()
            .map(|i| ["North", "South", "East"][(*i % 3) as usize])
            .collect();
        let month: Vec<i32> = ids.iter().map(|i| (*i % 4) as i32 + 1).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(region)),
                Arc::new(Int32Array::from(month)),
            ],
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_in_any_order_land_in_their_partitions_in_one_commit() {
        let (dir, tables) = crate::testing::temp_tables();
        let id = TableId::processed("t");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("month", DataType::Int32, false),
        ]));
        let spill = dir.path().join("tmp");
        for (round, expect_version) in [(0, 0), (1, 1)] {
            let mut append =
                PartitionedAppend::new(&id, schema.clone(), &["region", "month"], &spill).unwrap();
            for b in 0..5 {
                append
                    .push(&batch(&schema, round * 1000 + b * 100, 100))
                    .unwrap();
            }
            assert_eq!(append.rows(), 500);
            let written = std::sync::atomic::AtomicU64::new(0);
            let v = append
                .commit(&tables, 7, &|n| {
                    written.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                })
                .await
                .unwrap();
            assert_eq!(v, expect_version);
            assert_eq!(written.into_inner(), 500);
        }
        // The spill folders are gone.
        assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);

        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", tables.provider(&id, None).await.unwrap().unwrap())
            .unwrap();
        let rows = ctx
            .sql("SELECT COUNT(*), COUNT(DISTINCT id), SUM(CASE WHEN region = 'North' AND id % 3 <> 0 THEN 1 ELSE 0 END), SUM(CASE WHEN month <> CAST(id % 4 AS INT) + 1 THEN 1 ELSE 0 END) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row: Vec<i64> = (0..4)
            .map(|i| {
                array_value_to_string(rows[0].column(i), 0)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(row, vec![1000, 1000, 0, 0]);
        // 3 regions x 4 months, one file each per commit.
        let files = tables
            .open(&id)
            .await
            .unwrap()
            .unwrap()
            .get_file_uris()
            .unwrap()
            .count();
        assert_eq!(files, 24);
        let history = tables.history(&id).await.unwrap();
        assert_eq!(history.len(), 2);
    }

    /// A partition of 300,000 rows is one row group: the readers set up a row group once,
    /// not three times as with 122,880-row groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_is_written_in_large_row_groups() {
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        let (dir, tables) = crate::testing::temp_tables();
        let id = TableId::processed("t");
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ]));
        let mut append =
            PartitionedAppend::new(&id, schema.clone(), &["region"], &dir.path().join("tmp"))
                .unwrap();
        let rows = 300_000;
        for start in (0..rows).step_by(50_000) {
            let ids = Int64Array::from_iter_values(start..start + 50_000);
            let region = StringArray::from(vec!["North"; 50_000]);
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(region)]);
            append.push(&batch.unwrap()).unwrap();
        }
        append.commit(&tables, 1, &|_| {}).await.unwrap();
        let table = tables.open(&id).await.unwrap().unwrap();
        let files: Vec<String> = table.get_file_uris().unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = match url::Url::parse(&files[0]) {
            Ok(url) => url.to_file_path().unwrap(),
            Err(_) => PathBuf::from(&files[0]),
        };
        let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let groups: Vec<i64> = (0..reader.num_row_groups())
            .map(|i| reader.metadata().row_group(i).num_rows())
            .collect();
        assert_eq!(groups, vec![rows]);
    }
}

//! De-duplication against what `fact_sales` already holds, in memory that grows with the new
//! data rather than with the lake.
//!
//! A run does not load every key of `fact_sales` into a hash set (16+ bytes per row of the
//! lake, read in full even to add one day). It builds a split-block Bloom filter over the keys
//! instead (2 bytes per lake row): a key the filter has not seen is certainly new and loads at
//! once; a key it may have seen is held back with its row. After the scan, the held keys (the
//! real duplicates plus about 0.1% of new rows) are checked exactly against the table's keys
//! in one streaming pass, and the rows that are new after all join the same commit.
//! Held rows past a memory budget spill to a temporary Arrow IPC file, so a redelivery of a
//! large, already loaded file does not grow memory either.

use crate::schema::FACT_SALES;
use crate::{EtlError, Result};
use datafusion::arrow::array::{Array, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Filter bits per key: a false-positive rate of about 0.1% to 0.2%.
const BITS_PER_KEY: usize = 16;
/// The salts of Parquet's split-block Bloom filter.
const SALT: [u32; 8] = [
    0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31,
];

/// A split-block Bloom filter (the layout Parquet uses) over 128-bit keys. The keys are
/// already uniform hashes, so their bits index the filter directly.
pub struct Bloom {
    blocks: Vec<[u32; 8]>,
}

impl Bloom {
    /// A filter sized for `n` keys.
    pub fn with_capacity(n: usize) -> Bloom {
        let blocks = (n.max(1) * BITS_PER_KEY).div_ceil(256);
        Bloom {
            blocks: vec![[0; 8]; blocks],
        }
    }

    fn locate(&self, key: u128) -> (usize, u32) {
        let hi = (key >> 64) as u64;
        // Multiply-shift maps the high 32 bits onto the blocks without a power-of-two size.
        let block = (((hi >> 32) * self.blocks.len() as u64) >> 32) as usize;
        (block, key as u32)
    }

    pub fn insert(&mut self, key: u128) {
        let (b, h) = self.locate(key);
        let block = &mut self.blocks[b];
        for (word, salt) in block.iter_mut().zip(SALT) {
            *word |= 1 << (h.wrapping_mul(salt) >> 27);
        }
    }

    pub fn may_contain(&self, key: u128) -> bool {
        let (b, h) = self.locate(key);
        let block = &self.blocks[b];
        block
            .iter()
            .zip(SALT)
            .all(|(word, salt)| word & (1 << (h.wrapping_mul(salt) >> 27)) != 0)
    }

    pub fn size_bytes(&self) -> usize {
        self.blocks.len() * 32
    }
}

/// What the run knows about the keys already in `fact_sales`.
pub enum LakeKeys {
    /// `fact_sales` holds no rows.
    Empty,
    /// Every key, exactly (small loads such as a quarantine replay).
    Exact(HashSet<u128>),
    /// A filter over the keys of `fact_sales` at `version`.
    Filter { bloom: Bloom, version: i64 },
}

/// Whether a key is in `fact_sales`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InLake {
    No,
    Yes,
    Maybe,
}

impl LakeKeys {
    pub fn check(&self, key: u128) -> InLake {
        match self {
            LakeKeys::Empty => InLake::No,
            LakeKeys::Exact(keys) if keys.contains(&key) => InLake::Yes,
            LakeKeys::Exact(_) => InLake::No,
            LakeKeys::Filter { bloom, .. } if bloom.may_contain(key) => InLake::Maybe,
            LakeKeys::Filter { .. } => InLake::No,
        }
    }
}

/// The keys of the sales of this run so far.
pub enum RunKeys {
    /// Every key, exactly (small loads such as a quarantine replay).
    Exact(HashSet<u128>),
    /// A filter: a key it may have seen is settled after the scan, against the rows spilled
    /// so far and the earlier held ones.
    Filter(Bloom),
}

impl RunKeys {
    /// Record a key; whether the run has seen it before.
    pub fn check_insert(&mut self, key: u128) -> InLake {
        match self {
            RunKeys::Exact(keys) => {
                if keys.insert(key) {
                    InLake::No
                } else {
                    InLake::Yes
                }
            }
            RunKeys::Filter(bloom) if bloom.may_contain(key) => InLake::Maybe,
            RunKeys::Filter(bloom) => {
                bloom.insert(key);
                InLake::No
            }
        }
    }
}

/// A dedupe key as stored in `fact_sales.dedupe_key` (16 bytes, big-endian).
pub fn key_of(bytes: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(bytes).ok().map(u128::from_be_bytes)
}

/// The `dedupe_key` column of a `fact_sales` batch, cast to plain binary if needed.
pub fn key_column(batch: &RecordBatch) -> Result<BinaryArray> {
    let col = batch
        .column_by_name("dedupe_key")
        .ok_or_else(|| EtlError::Internal("fact_sales batch without dedupe_key".into()))?;
    let col =
        datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Binary)?;
    col.as_any()
        .downcast_ref::<BinaryArray>()
        .cloned()
        .ok_or_else(|| EtlError::Internal("dedupe_key is not binary".into()))
}

/// Rows whose key the filter may have seen, waiting for the exact check. Batches stay in
/// memory up to a budget, then go to a temporary file.
pub struct Held {
    memory: Vec<RecordBatch>,
    memory_bytes: usize,
    budget: usize,
    spill_dir: PathBuf,
    spill: Option<(File, StreamWriter<BufWriter<File>>)>,
    /// Per held row: bit 0 set when it loaded against an inferred customer, bit 1 a product.
    pub inferred: Vec<u8>,
    rows: usize,
}

impl Held {
    pub fn new(spill_dir: &Path, budget: usize) -> Held {
        Held {
            memory: Vec::new(),
            memory_bytes: 0,
            budget,
            spill_dir: spill_dir.to_path_buf(),
            spill: None,
            inferred: Vec::new(),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    pub fn push(&mut self, batch: RecordBatch, inferred: &[u8]) -> Result<()> {
        debug_assert_eq!(batch.num_rows(), inferred.len());
        self.rows += batch.num_rows();
        self.inferred.extend_from_slice(inferred);
        if self.spill.is_none() && self.memory_bytes + batch.get_array_memory_size() <= self.budget
        {
            self.memory_bytes += batch.get_array_memory_size();
            self.memory.push(batch);
            return Ok(());
        }
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.spill_dir).map_err(|e| self.io_err(e))?;
            let file = tempfile::tempfile_in(&self.spill_dir).map_err(|e| self.io_err(e))?;
            let writer = StreamWriter::try_new(
                BufWriter::new(file.try_clone().map_err(|e| self.io_err(e))?),
                &FACT_SALES,
            )?;
            self.spill = Some((file, writer));
            // Keep the order of the rows: what was in memory goes first.
            for b in std::mem::take(&mut self.memory) {
                self.spill.as_mut().expect("just set").1.write(&b)?;
            }
            self.memory_bytes = 0;
        }
        self.spill.as_mut().expect("spilling").1.write(&batch)?;
        Ok(())
    }

    fn io_err(&self, e: std::io::Error) -> EtlError {
        EtlError::Input {
            path: self.spill_dir.display().to_string(),
            message: format!("cannot spill held rows to a temporary file: {e}"),
        }
    }

    /// The held batches, in the order they were held.
    pub fn batches(&mut self) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + '_>> {
        match &mut self.spill {
            None => Ok(Box::new(self.memory.iter().cloned().map(Ok))),
            Some((file, writer)) => {
                writer.flush()?;
                let mut f = file
                    .try_clone()
                    .map_err(|e| EtlError::Internal(e.to_string()))?;
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| EtlError::Internal(e.to_string()))?;
                let reader = StreamReader::try_new(BufReader::new(f), None)?;
                Ok(Box::new(reader.map(|b| b.map_err(EtlError::from))))
            }
        }
    }

    /// Every held key.
    pub fn keys(&mut self) -> Result<HashSet<u128>> {
        let mut keys = HashSet::with_capacity(self.rows);
        for batch in self.batches()? {
            let col = key_column(&batch?)?;
            keys.extend(col.iter().flatten().filter_map(key_of));
        }
        Ok(keys)
    }
}

/// Split a held batch into the rows to load and, per file, the count of duplicates dropped
/// (with the inferred-member flags of the dropped rows, from `inferred`). A held row is a
/// duplicate when its key is in `existing` (the table, or rows of this run that were not
/// held) or an earlier held row had it (`earlier`, updated here).
pub fn settle(
    batch: &RecordBatch,
    inferred: &[u8],
    existing: &HashSet<u128>,
    earlier: &mut HashSet<u128>,
    dropped: &mut std::collections::BTreeMap<i64, i64>,
    dropped_inferred: &mut (u64, u64),
) -> Result<RecordBatch> {
    let keys = key_column(batch)?;
    let files = batch
        .column_by_name("file_id")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| EtlError::Internal("held batch without file_id".into()))?;
    let mut keep = Vec::with_capacity(batch.num_rows());
    for (i, flags) in inferred.iter().enumerate().take(batch.num_rows()) {
        let dup =
            key_of(keys.value(i)).is_some_and(|k| existing.contains(&k) || !earlier.insert(k));
        if dup {
            *dropped.entry(files.value(i)).or_default() += 1;
            dropped_inferred.0 += u64::from(flags & 1);
            dropped_inferred.1 += u64::from((flags >> 1) & 1);
        }
        keep.push(!dup);
    }
    let mask = datafusion::arrow::array::BooleanArray::from(keep);
    Ok(datafusion::arrow::compute::filter_record_batch(
        batch, &mask,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let n = 200_000;
        let mut bloom = Bloom::with_capacity(n);
        for i in 0..n as u64 {
            bloom.insert(key(i));
        }
        assert!((0..n as u64).all(|i| bloom.may_contain(key(i))));
        let fp = (n as u64..2 * n as u64)
            .filter(|&i| bloom.may_contain(key(i)))
            .count();
        // 16 bits per key: about 0.1%; allow 0.5%.
        assert!(fp < n / 200, "{fp} false positives in {n}");
        assert_eq!(bloom.size_bytes(), (n * 16).div_ceil(256) * 32);
    }

    fn batch(keys: &[u128], file_id: i64) -> RecordBatch {
        use datafusion::arrow::array::{ArrayRef, BinaryBuilder, BooleanArray, StringArray};
        use datafusion::arrow::datatypes::DataType;
        use datafusion::scalar::ScalarValue;
        use std::sync::Arc;
        let n = keys.len();
        let cols: Vec<ArrayRef> = FACT_SALES
            .fields()
            .iter()
            .map(|f| match (f.name().as_str(), f.data_type()) {
                ("dedupe_key", _) => {
                    let mut b = BinaryBuilder::new();
                    keys.iter().for_each(|k| b.append_value(k.to_be_bytes()));
                    Arc::new(b.finish()) as ArrayRef
                }
                ("file_id", _) => Arc::new(Int64Array::from(vec![file_id; n])),
                (_, DataType::Utf8) => Arc::new(StringArray::from(vec!["x"; n])),
                (_, DataType::Boolean) => Arc::new(BooleanArray::from(vec![false; n])),
                (_, t) => ScalarValue::new_zero(t)
                    .unwrap()
                    .to_array_of_size(n)
                    .unwrap(),
            })
            .collect();
        RecordBatch::try_new(FACT_SALES.clone(), cols).unwrap()
    }

    #[test]
    fn held_rows_spill_keep_their_order_and_settle_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // A budget smaller than one batch: everything goes through the spill file.
        let mut held = Held::new(dir.path(), 16);
        held.push(batch(&[key(1), key(2)], 7), &[0, 1]).unwrap();
        held.push(batch(&[key(3), key(4), key(5)], 8), &[2, 0, 3])
            .unwrap();
        // Seen again later in the run: a duplicate of the first held row.
        held.push(batch(&[key(1)], 9), &[0]).unwrap();
        assert!(held.spilled());
        assert_eq!(held.rows(), 6);
        let keys = held.keys().unwrap();
        assert_eq!(keys.len(), 5);
        let existing: HashSet<u128> = [key(2), key(5)].into_iter().collect();
        let inferred = std::mem::take(&mut held.inferred);
        let (mut dropped, mut dropped_inferred) = (Default::default(), (0, 0));
        let mut earlier = HashSet::new();
        let mut kept = Vec::new();
        let mut offset = 0;
        for b in held.batches().unwrap() {
            let b = b.unwrap();
            let n = b.num_rows();
            let k = settle(
                &b,
                &inferred[offset..offset + n],
                &existing,
                &mut earlier,
                &mut dropped,
                &mut dropped_inferred,
            )
            .unwrap();
            offset += n;
            kept.extend(key_column(&k).unwrap().iter().flatten().filter_map(key_of));
        }
        assert_eq!(kept, vec![key(1), key(3), key(4)]);
        assert_eq!(dropped, [(7, 1), (8, 1), (9, 1)].into_iter().collect());
        // Row 2 had an inferred customer, row 5 both.
        assert_eq!(dropped_inferred, (2, 1));
    }

    #[test]
    fn lake_keys_answer_by_kind() {
        let mut exact = HashSet::new();
        exact.insert(key(1));
        assert_eq!(LakeKeys::Exact(exact).check(key(1)), InLake::Yes);
        assert_eq!(LakeKeys::Empty.check(key(1)), InLake::No);
        let mut bloom = Bloom::with_capacity(10);
        bloom.insert(key(1));
        let f = LakeKeys::Filter { bloom, version: 0 };
        assert_eq!(f.check(key(1)), InLake::Maybe);
    }
}

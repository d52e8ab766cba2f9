//! Printing query results: a table, CSV, JSON, or a Parquet file.

use anyhow::{Context, Result, bail};
use datafusion::arrow::record_batch::RecordBatch;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// Write batches to stdout (table, csv, json) or to `output` (any format; parquet needs it).
pub fn write(batches: &[RecordBatch], format: Format, output: Option<&Path>) -> Result<()> {
    let mut sink: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match format {
        Format::Table => {
            let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(sink, "{text}")?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut sink);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut sink);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            drop(w);
            writeln!(sink)?;
        }
        Format::Parquet => {
            let Some(path) = output else {
                bail!("--format parquet needs --output FILE")
            };
            drop(sink);
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let schema = match batches.first() {
                Some(b) => b.schema(),
                None => bail!("the query returned no batches to write"),
            };
            let props = deltalake::parquet::file::properties::WriterProperties::builder()
                .set_compression(deltalake::parquet::basic::Compression::ZSTD(
                    Default::default(),
                ))
                .build();
            let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            return Ok(());
        }
    }
    sink.flush()?;
    Ok(())
}

//! Times the generator: `cargo run --release -p shoplake-datagen --example generate -- ROWS DIR [THREADS]`.

use shoplake_datagen::{GenerateConfig, generate};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate ROWS DIR [THREADS]";
    let sales_rows: u64 = args.next().ok_or(usage)?.parse()?;
    let dir = args.next().ok_or(usage)?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(0);
    let config = GenerateConfig {
        sales_rows,
        threads,
        ..GenerateConfig::default()
    };
    let started = Instant::now();
    let report = generate(&config, dir.as_ref(), &|_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = report
        .files
        .iter()
        .map(|f| std::fs::metadata(std::path::Path::new(&dir).join(&f.path)).map_or(0, |m| m.len()))
        .sum();
    println!(
        "{} sales rows in {} files, {:.1} MB, in {seconds:.2}s ({:.2} M rows/s)",
        report.sales_rows_in,
        report.files.len(),
        bytes as f64 / 1e6,
        report.sales_rows_in as f64 / seconds / 1e6,
    );
    println!("{}", serde_json::to_string_pretty(&report.expected)?);
    Ok(())
}

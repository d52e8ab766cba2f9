//! Progress bars on a terminal (indicatif); nothing when quiet or not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoplake_etl::Progress;
use std::sync::Mutex;

pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        let enabled = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Bars {
            bar: Mutex::new(None),
            enabled,
        }
    }

    pub fn rows(&self, what: &str, total: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    }
}

impl Bars {
    fn start(&self, name: &str, total: u64, unit: &str) {
        if !self.enabled {
            return;
        }
        let bar = if total > 0 {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(&format!("{{msg:>12}} [{{bar:30}}] {unit}"))
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_message(name.chars().take(40).collect::<String>());
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        let unit = if name == "crawl" {
            "{pos}/{len} files"
        } else {
            "{bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
        };
        self.start(name, total, unit);
    }

    fn stage_rows(&self, name: &str, total: u64) {
        self.start(
            name,
            total,
            "{human_pos}/{human_len} rows ({per_sec}, {eta})",
        );
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(n);
        }
    }

    fn done(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }

    fn note(&self, message: &str) {
        match self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }
}

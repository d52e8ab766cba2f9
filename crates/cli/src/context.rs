//! Resolving where the lake, its configuration and its control plane are, and opening them.

use anyhow::{Context, Result};
use shoplake_catalog::ledger::Ledger;
use shoplake_core::Config;
use shoplake_etl::Pipeline;
use shoplake_etl::pii::PiiKey;
use shoplake_storage::Lake;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Global options every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Lake root: a folder or a file:// URL [default: ./lake, or `lake` in shoplake.toml]
    #[arg(long, global = true, env = "SHOPLAKE_LAKE")]
    pub lake: Option<String>,
    /// Configuration file [default: ./shoplake.toml when it exists]
    #[arg(long, global = true, env = "SHOPLAKE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print logs as JSON lines
    #[arg(long, global = true)]
    pub log_json: bool,
    /// No progress bars
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// The opened lake with everything a command needs.
pub struct App {
    pub config: Config,
    pub lake: Lake,
    pub ledger: Arc<Ledger>,
    pub pipeline: Arc<Pipeline>,
    /// The control plane's folder (`<lake>/_control` by default).
    pub state_dir: PathBuf,
}

pub fn load_config(args: &GlobalArgs) -> Result<Config> {
    match &args.config {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let p = Path::new("shoplake.toml");
            if p.exists() {
                Ok(Config::load(p)?)
            } else {
                Ok(Config::default())
            }
        }
    }
}

impl App {
    pub fn open(args: &GlobalArgs) -> Result<App> {
        let config = load_config(args)?;
        let location = args
            .lake
            .clone()
            .or_else(|| config.lake.clone())
            .unwrap_or_else(|| "./lake".to_string());
        let lake =
            Lake::open(&location).with_context(|| format!("opening the lake at {location}"))?;
        let state_dir = match &config.state_dir {
            Some(d) => d.clone(),
            None => lake
                .local_root()
                .map(|r| r.join("_control"))
                .unwrap_or_else(|| PathBuf::from(".shoplake")),
        };
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let ledger = Arc::new(Ledger::open(&state_dir.join("shoplake.db"))?);
        let pii = pii_key(&config, &state_dir)?;
        let pipeline = Pipeline::new(
            lake.clone(),
            ledger.clone(),
            config.clone(),
            pii,
            state_dir.clone(),
        );
        Ok(App {
            config,
            lake,
            ledger,
            pipeline: Arc::new(pipeline),
            state_dir,
        })
    }
}

/// The PII hashing key: from the configured environment variable, else a key created once in
/// the state directory (never in the lake, so readers of the lake cannot reverse the hashes).
fn pii_key(config: &Config, state_dir: &Path) -> Result<PiiKey> {
    if let Ok(k) = std::env::var(&config.pipeline.pii_key_env)
        && !k.is_empty()
    {
        return Ok(PiiKey::new(k.into_bytes()));
    }
    let path = state_dir.join("pii.key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok(PiiKey::new(k.trim().as_bytes().to_vec()));
    }
    let key = PiiKey::generate_hex();
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(PiiKey::new(key.into_bytes()))
}

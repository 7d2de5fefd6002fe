//! From the validated configuration to the pipeline's settings and keys.

use anyhow::Context as _;
use wardlink_config::{Config, DatePolicyConfig, PseudonymScope};

use crate::pipeline::{DatePolicy, FieldOverride, Pipeline, PipelineSettings, Scope, SiteKeys};

/// The pipeline settings of `[deid]` and `[validate]`.
///
/// # Errors
/// An override the pipeline's profile does not accept (the config crate
/// checks the syntax; the profile knows which fields exist).
pub fn pipeline_settings(config: &Config) -> anyhow::Result<PipelineSettings> {
    let mut overrides = Vec::with_capacity(config.deid.overrides.len());
    for o in &config.deid.overrides {
        let parsed = FieldOverride::parse(&o.field, o.action.as_str()).with_context(|| {
            format!(
                "deid.overrides.\"{}\"{}: the de-identification profile cannot apply {} to this field",
                o.field,
                o.line.map(|l| format!(" (line {l})")).unwrap_or_default(),
                o.action.as_str()
            )
        })?;
        overrides.push(parsed);
    }
    Ok(PipelineSettings {
        date_policy: match config.deid.date_policy {
            DatePolicyConfig::Shift { max_days } => DatePolicy::Shift { max_days },
            DatePolicyConfig::YearOnly => DatePolicy::YearOnly,
        },
        max_future_skew: config.validate.max_future_skew,
        max_age: config.validate.max_age,
        overrides,
        pseudonym_scope: match config.deid.pseudonym_scope {
            PseudonymScope::Site => Scope::Site,
            PseudonymScope::Network => Scope::Network,
        },
    })
}

/// Add the network key to `keys` when the configuration asks for network scope.
///
/// # Errors
/// The network key file is missing, malformed or readable by others.
pub fn with_network_key(config: &Config, keys: SiteKeys) -> anyhow::Result<SiteKeys> {
    match &config.deid.network_key_file {
        Some(path) => keys
            .with_network_key_file(path)
            .with_context(|| format!("deid.network_key_file {}", path.display())),
        None => Ok(keys),
    }
}

/// The gateway's pipeline: its site secret (created on first start) and the
/// configured settings.
///
/// # Errors
/// The site secret or the network key cannot be used, or the settings are
/// not accepted.
pub fn gateway_pipeline(config: &Config) -> anyhow::Result<Pipeline> {
    let keys = SiteKeys::load_or_create(&config.gateway.state_dir)
        .context("cannot load or create the site secret")?;
    let keys = with_network_key(config, keys)?;
    Pipeline::new(pipeline_settings(config)?, keys)
        .map(|p| p.with_dicom(config.deid.dicom))
        .context("cannot build the de-identification pipeline")
}

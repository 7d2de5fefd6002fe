//! Tests that need the crate's internals: the embedded default against the schema.

use crate::raw::{
    keys_of, RawConfig, RawDeid, RawGateway, RawLog, RawMllp, RawSources, RawStore, RawSync,
    RawValidate,
};
use crate::{
    embedded_default, from_toml_str, Config, DeidConfig, FieldOverrideConfig, MllpSource,
    OverrideAction, Sources, DEFAULT_TOML,
};

/// Every key of the schema, as `(table header, key)`.
fn schema() -> Vec<(&'static str, &'static str)> {
    let mut keys = Vec::new();
    for (table, fields) in [
        ("[gateway]", keys_of::<RawGateway>()),
        ("[log]", keys_of::<RawLog>()),
        ("[store]", keys_of::<RawStore>()),
        ("[deid]", keys_of::<RawDeid>()),
        ("[validate]", keys_of::<RawValidate>()),
        ("[sync]", keys_of::<RawSync>()),
        ("[[source.mllp]]", keys_of::<RawMllp>()),
        // The MQTT example is commented out (no broker by default).
        (
            "# [[source.mqtt]]",
            keys_of::<crate::validate::mqtt::RawMqtt>(),
        ),
        (
            "# [[source.mqtt.topic]]",
            keys_of::<crate::validate::mqtt::RawTopic>(),
        ),
        (
            "# [[source.mqtt.topic.value]]",
            keys_of::<crate::validate::mqtt::RawValue>(),
        ),
        ("[deid.dicom]", keys_of::<crate::dicom::RawDeidDicom>()),
        ("[admin]", keys_of::<crate::admin::RawAdmin>()),
    ] {
        keys.extend(fields.iter().map(|k| (table, *k)));
    }
    keys
}

#[test]
fn the_key_lists_come_from_the_structs() {
    assert_eq!(
        keys_of::<RawConfig>(),
        ["gateway", "log", "store", "deid", "validate", "sync", "source", "admin"]
    );
    assert_eq!(keys_of::<RawSources>(), ["mllp", "serial", "mqtt", "dicom"]);
    assert_eq!(
        keys_of::<RawStore>(),
        ["raw_retention", "group_commit_max", "max_bytes"]
    );
    assert_eq!(
        keys_of::<RawDeid>(),
        [
            "date_policy",
            "date_shift_max_days",
            "pseudonym_scope",
            "network_key_file",
            "overrides",
            "dicom"
        ]
    );
    assert_eq!(keys_of::<RawValidate>(), ["max_future_skew", "max_age"]);
    assert_eq!(
        keys_of::<RawSync>(),
        [
            "collector_url",
            "collector_public_key",
            "ca_file",
            "client_cert_file",
            "client_key_file",
            "batch_max_events",
            "batch_max_age",
            "outbox_max_bytes",
            "retry_backoff_min",
            "retry_backoff_max"
        ]
    );
    // 30 before [[source.mqtt]] (12 keys), its topics (9) and values (5);
    // [deid.dicom] (5); [admin] (2) and MLLP `tls` (1).
    assert_eq!(schema().len(), 64);
    assert_eq!(keys_of::<crate::admin::RawAdmin>(), ["enabled", "listen"]);
}

#[test]
fn embedded_default_parses_and_equals_the_programmatic_defaults() -> Result<(), String> {
    let parsed = embedded_default().map_err(|e| e.to_string())?;
    let expected = Config {
        sources: Sources {
            mllp: vec![MllpSource::default()],
            ..Sources::default()
        },
        ..Config::default()
    };
    assert_eq!(parsed, expected);
    Ok(())
}

#[test]
fn an_empty_file_is_the_programmatic_default_without_sources() -> Result<(), String> {
    let parsed = from_toml_str("", "empty.toml").map_err(|e| e.to_string())?;
    assert_eq!(parsed, Config::default());
    assert!(parsed.sources.is_empty());
    Ok(())
}

#[test]
fn embedded_default_sets_every_key_in_its_table_with_a_comment_above() {
    let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
    for (table, key) in schema() {
        // Every occurrence of the header (an array of tables may show several).
        let headers: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == table).collect();
        assert!(!headers.is_empty(), "default.toml has no {table} header");
        // A key whose value is a table is its own header: `[deid.overrides]`,
        // `[[source.mqtt.topic]]`. A commented-out example table (`# [[...]]`)
        // sets its keys commented out too.
        let stem = table.trim_end_matches(']');
        let closing = &table[stem.len()..];
        let sub_table = format!("{stem}.{key}{closing}");
        let prefix = if table.starts_with("# ") { "# " } else { "" };
        let at = headers
            .iter()
            .find_map(|&header| {
                lines[header + 1..]
                    .iter()
                    .take_while(|l| {
                        let t = l.trim_start_matches("# ");
                        !(t.starts_with('[') && t.ends_with(']') && !t.contains(' '))
                    })
                    .position(|l| l.starts_with(&format!("{prefix}{key} = ")))
                    .map(|i| header + 1 + i)
            })
            .or_else(|| lines.iter().position(|l| *l == sub_table))
            .unwrap_or_else(|| panic!("default.toml does not set {key} under {table}"));
        assert!(
            lines[at - 1].starts_with("# "),
            "default.toml: {key} has no comment line above it"
        );
    }
}

#[test]
fn every_line_of_default_toml_that_sets_a_key_is_a_schema_key() {
    let mut known: Vec<&str> = schema().iter().map(|(_, k)| *k).collect();
    // The serial section is only a commented-out example (tested in serial.rs).
    let (port_keys, map_keys) = crate::serial::keys();
    known.extend(port_keys.iter().chain(map_keys));
    // `[[source.dicom]]` is only a commented-out example, so not in `schema()`.
    known.extend(
        crate::raw::keys_of::<crate::dicom::RawDicom>()
            .iter()
            .copied(),
    );
    for line in DEFAULT_TOML.lines() {
        // Settings, live or commented out: `key = value`, `# key = value`.
        let Some((key, _)) = line.trim_start_matches("# ").split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            assert!(known.contains(&key), "default.toml sets unknown key {key}");
        }
    }
}

#[test]
fn the_commented_out_example_listener_is_valid() -> Result<(), String> {
    // Uncomment the block that starts at the commented [[source.mllp]].
    let mut text = String::new();
    let mut in_example = false;
    let mut found = false;
    for line in DEFAULT_TOML.lines() {
        in_example |= line == "# [[source.mllp]]";
        found |= in_example;
        // The example ends at the first blank line (other kinds' examples follow).
        in_example &= !line.is_empty();
        if in_example {
            text.push_str(line.trim_start_matches("# "));
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    assert!(found, "default.toml has no commented-out listener example");
    let config = from_toml_str(&text, "example").map_err(|e| e.to_string())?;
    assert_eq!(config.sources.mllp.len(), 2);
    let lab = &config.sources.mllp[1];
    assert_eq!(lab.name, "lab");
    assert_eq!(lab.allow.len(), 2);
    assert_eq!(lab.allow[1].to_string(), "192.168.4.7/32");
    Ok(())
}

#[test]
fn embedded_default_has_every_section_at_its_default() -> Result<(), String> {
    let parsed = embedded_default().map_err(|e| e.to_string())?;
    assert_eq!(parsed.deid, DeidConfig::default());
    assert!(parsed.deid.overrides.is_empty());
    assert!(parsed.deid.network_key_file.is_none());
    assert_eq!(parsed.validate, crate::ValidateConfig::default());
    assert_eq!(parsed.sync, crate::SyncConfig::default());
    assert!(parsed.sync.collector.is_none(), "sync is off by default");
    Ok(())
}

#[test]
fn the_commented_out_override_example_is_valid() -> Result<(), String> {
    let example = "# \"PID-11.5\" = \"generalize\"";
    assert!(
        DEFAULT_TOML.lines().any(|l| l == example),
        "default.toml has no commented-out override example"
    );
    let text = DEFAULT_TOML.replace(example, example.trim_start_matches("# "));
    let line = DEFAULT_TOML
        .lines()
        .position(|l| l == example)
        .map(|i| i + 1);
    let config = from_toml_str(&text, "example").map_err(|e| e.to_string())?;
    assert_eq!(
        config.deid.overrides,
        [FieldOverrideConfig {
            field: "PID-11.5".to_owned(),
            action: OverrideAction::Generalize,
            line,
        }]
    );
    Ok(())
}

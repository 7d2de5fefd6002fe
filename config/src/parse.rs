//! Text → [`RawConfig`]: TOML syntax, unknown keys, then serde.

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::raw::{
    keys_of, RawConfig, RawDeid, RawGateway, RawLog, RawMllp, RawSources, RawStore, RawSync,
    RawValidate,
};
use crate::report::Report;

const SYNTAX_FIX: &str = "fix the TOML syntax on this line (strings in double quotes, \
     tables as [name], lists as [\"a\", \"b\"]; see https://toml.io)";

/// Parses `text`; `None` when it is not TOML at all (the syntax errors are
/// in `report`). Unknown keys and values of the wrong type are reported and
/// the rest is still returned, so validation can report its problems too.
pub(crate) fn parse(text: &str, report: &mut Report<'_>) -> Option<RawConfig> {
    let (mut root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // Recovery can produce several errors for one mistake; keep the first per line.
        let mut last_line = None;
        for error in &errors {
            let line = error.span().map(|s| report.line_of(s.start));
            if line.is_some() && line == last_line {
                continue;
            }
            last_line = line;
            report.push(error.span().as_ref(), "", error.message(), SYNTAX_FIX);
        }
        return None;
    }
    remove_unknown_keys(root.get_mut(), report);
    match RawConfig::deserialize(toml::de::Deserializer::from(root)) {
        Ok(raw) => Some(raw),
        Err(error) => {
            // Not expected: every value is a `Field`, which keeps its own error.
            report.push(
                error.span().as_ref(),
                "",
                error.message(),
                "compare the file with `wardlink print-default-config`",
            );
            None
        }
    }
}

/// Reports and removes every key the schema does not know, in every table
/// whose shape is right (a table where a table belongs is left to serde,
/// which reports it at that key).
fn remove_unknown_keys(root: &mut DeTable<'_>, report: &mut Report<'_>) {
    check_keys(root, "", keys_of::<RawConfig>(), report);
    for (name, keys) in [
        ("gateway", keys_of::<RawGateway>()),
        ("log", keys_of::<RawLog>()),
        ("store", keys_of::<RawStore>()),
        // `deid.overrides` is not checked: its keys are field names.
        ("deid", keys_of::<RawDeid>()),
        ("validate", keys_of::<RawValidate>()),
        ("sync", keys_of::<RawSync>()),
        ("admin", keys_of::<crate::admin::RawAdmin>()),
    ] {
        if let Some(table) = table_mut(root, name) {
            check_keys(table, name, keys, report);
        }
    }
    if let Some(source) = table_mut(root, "source") {
        check_keys(source, "source", keys_of::<RawSources>(), report);
        if let Some(DeValue::Array(listeners)) = source.get_mut("mllp").map(Spanned::get_mut) {
            for (i, listener) in listeners.iter_mut().enumerate() {
                if let DeValue::Table(table) = listener.get_mut() {
                    check_keys(
                        table,
                        &format!("source.mllp[{i}]"),
                        keys_of::<RawMllp>(),
                        report,
                    );
                }
            }
        }
        if let Some(DeValue::Array(listeners)) = source.get_mut("dicom").map(Spanned::get_mut) {
            for (i, listener) in listeners.iter_mut().enumerate() {
                if let DeValue::Table(table) = listener.get_mut() {
                    check_keys(
                        table,
                        &format!("source.dicom[{i}]"),
                        keys_of::<crate::dicom::RawDicom>(),
                        report,
                    );
                }
            }
        }
        crate::serial::remove_unknown_keys(source, report);
        check_mqtt_keys(source, report);
    }
}

/// `[[source.mqtt]]`, its `[[source.mqtt.topic]]`s and their `[[source.mqtt.topic.value]]`s.
fn check_mqtt_keys(source: &mut DeTable<'_>, report: &mut Report<'_>) {
    use crate::validate::mqtt::{RawMqtt, RawTopic, RawValue};
    let Some(DeValue::Array(sources)) = source.get_mut("mqtt").map(Spanned::get_mut) else {
        return;
    };
    for (i, s) in sources.iter_mut().enumerate() {
        let DeValue::Table(st) = s.get_mut() else {
            continue;
        };
        let path = format!("source.mqtt[{i}]");
        check_keys(st, &path, keys_of::<RawMqtt>(), report);
        let Some(DeValue::Array(topics)) = st.get_mut("topic").map(Spanned::get_mut) else {
            continue;
        };
        for (j, t) in topics.iter_mut().enumerate() {
            let DeValue::Table(tt) = t.get_mut() else {
                continue;
            };
            let path = format!("{path}.topic[{j}]");
            check_keys(tt, &path, keys_of::<RawTopic>(), report);
            let Some(DeValue::Array(values)) = tt.get_mut("value").map(Spanned::get_mut) else {
                continue;
            };
            for (k, v) in values.iter_mut().enumerate() {
                if let DeValue::Table(vt) = v.get_mut() {
                    check_keys(
                        vt,
                        &format!("{path}.value[{k}]"),
                        keys_of::<RawValue>(),
                        report,
                    );
                }
            }
        }
    }
}

fn table_mut<'a, 'i>(parent: &'a mut DeTable<'i>, key: &str) -> Option<&'a mut DeTable<'i>> {
    match parent.get_mut(key).map(Spanned::get_mut) {
        Some(DeValue::Table(table)) => Some(table),
        _ => None,
    }
}

pub(crate) fn check_keys(
    table: &mut DeTable<'_>,
    path: &str,
    allowed: &[&str],
    report: &mut Report<'_>,
) {
    let unknown: Vec<_> = table
        .iter()
        .filter(|(key, _)| !allowed.contains(&key.get_ref().as_ref()))
        .map(|(key, _)| (key.get_ref().to_string(), key.span()))
        .collect();
    for (key, span) in &unknown {
        table.remove(key.as_str());
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let place = if path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{}]", path_to_table(path))
        };
        let list = allowed.join(", ");
        let fix = match closest(key, allowed) {
            Some(near) => format!("did you mean `{near}`? The keys allowed {place} are: {list}"),
            None => {
                format!("remove it or correct its spelling; the keys allowed {place} are: {list}")
            }
        };
        report.push(Some(span), full, "unknown key", fix);
    }
}

/// `source.mllp[2]` → `[source.mllp]` as an operator writes the header.
fn path_to_table(path: &str) -> String {
    match path.split_once('[') {
        Some((table, _)) => format!("[{table}]"),
        None => path.to_owned(),
    }
}

/// The allowed key nearest to a misspelt one, if it is near enough.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("max_bytes", "max_bytes"), 0);
        assert_eq!(edit_distance("max_byte", "max_bytes"), 1);
        assert_eq!(edit_distance("max_conections", "max_connections"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("lisen", &["name", "listen"]), Some("listen"));
        assert_eq!(closest("zzzzzz", &["name", "listen"]), None);
    }

    #[test]
    fn path_to_table_drops_the_index() {
        assert_eq!(path_to_table("source.mllp[3]"), "[source.mllp]");
        assert_eq!(path_to_table("store"), "store");
    }
}

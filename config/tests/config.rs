//! The public API against real TOML text and real files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wardlink_config::{
    from_toml_str, load_file, ClientCert, CollectorTarget, ConfigError, DatePolicyConfig,
    DeidConfig, FieldOverrideConfig, LogLevel, MllpSource, OverrideAction, Problem, PseudonymScope,
    SyncConfig, ValidateConfig, DEFAULT_TOML,
};

const ORIGIN: &str = "test.toml";

/// Every problem of `text`, rendered as the operator sees it.
fn problems(text: &str) -> Vec<String> {
    match from_toml_str(text, ORIGIN) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(e) => {
            let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
            assert_eq!(lines.len(), e.problems().len(), "one line per problem: {e}");
            lines
        }
    }
}

/// The single problem of `text`; asserts its line, key and part of its message.
#[track_caller]
fn assert_one(text: &str, line: usize, key: &str, says: &str) {
    let all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    assert_has(&all, line, key, says);
}

#[track_caller]
fn assert_has(all: &[String], line: usize, key: &str, says: &str) {
    let prefix = if key.is_empty() {
        format!("{ORIGIN}:{line}: ")
    } else {
        format!("{ORIGIN}:{line}: {key}: ")
    };
    assert!(
        all.iter()
            .any(|p| p.starts_with(&prefix) && p.contains(says)),
        "no problem starting with {prefix:?} and containing {says:?} in {all:#?}"
    );
}

fn ok(text: &str) -> wardlink_config::Config {
    match from_toml_str(text, ORIGIN) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

// --- the format ----------------------------------------------------------

#[test]
fn a_problem_is_one_line_file_line_key_what_and_fix() {
    let text = "[[source.mllp]]\nmax_connections = 0\n";
    let err = from_toml_str(text, "/etc/wardlink/wardlink.toml").err();
    let Some(err) = err else {
        panic!("max_connections = 0 was accepted")
    };
    assert_eq!(
        err.to_string(),
        "/etc/wardlink/wardlink.toml:2: source.mllp[0].max_connections: 0 is less than the \
         minimum of 1; write a whole number from 1 to 10000, e.g. 64"
    );
    assert_eq!(
        err.problems(),
        [Problem {
            line: Some(2),
            key: "source.mllp[0].max_connections".to_owned(),
            message: "0 is less than the minimum of 1".to_owned(),
            fix: "write a whole number from 1 to 10000, e.g. 64".to_owned(),
        }]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_line_order() {
    let text = r#"
[store]
group_commit_max = 0
max_byte = 1

[log]
level = 7

[[source.mllp]]
name = "lab"
listen = "lab-host:2575"
idle_timeout = "soon"

[[source.mllp]]
name = "lab"
allow = ["10.0.0.0/33"]
commit_blocks = "no"
"#;
    let all = problems(text);
    assert_eq!(all.len(), 8, "{all:#?}");
    assert_has(
        &all,
        3,
        "store.group_commit_max",
        "0 is less than the minimum of 1",
    );
    assert_has(&all, 4, "store.max_byte", "unknown key");
    assert_has(&all, 7, "log.level", "invalid type: integer `7`");
    assert_has(&all, 11, "source.mllp[0].listen", "host name");
    assert_has(&all, 12, "source.mllp[0].idle_timeout", "is not a duration");
    assert_has(
        &all,
        15,
        "source.mllp[1].name",
        "already used by source.mllp[0].name (line 10)",
    );
    assert_has(&all, 16, "source.mllp[1].allow[0]", "not a CIDR network");
    assert_has(
        &all,
        17,
        "source.mllp[1].commit_blocks",
        "expected a boolean",
    );
    let lines: Vec<usize> = all
        .iter()
        .filter_map(|p| p.split(':').nth(1)?.parse().ok())
        .collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "not in line order: {lines:?}"
    );
}

// --- syntax, unknown keys, types ------------------------------------------

#[test]
fn toml_syntax_errors_name_their_line() {
    assert_one("[store]\ngroup_commit_max = = 3\n", 2, "", "extra `=`");
    assert_one(
        "[gateway]\nstate_dir = \"unterminated\n",
        2,
        "",
        "fix the TOML syntax",
    );
    assert_one("[store\n", 1, "", "fix the TOML syntax");
    assert_one(
        "[store]\nmax_bytes = 0\nmax_bytes = 0\n",
        3,
        "",
        "duplicate key",
    );
}

#[test]
fn several_syntax_errors_are_all_reported() {
    let all = problems("[gateway\nstate_dir = \"x\"\nfoo = = 3\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_has(&all, 1, "", "unclosed table");
    assert_has(&all, 3, "", "extra `=`");
}

#[test]
fn unknown_keys_are_reported_with_the_allowed_keys() {
    assert_one(
        "[store]\nraw_retention = \"7d\"\nmax_byte = 5\n",
        3,
        "store.max_byte",
        "unknown key; did you mean `max_bytes`? The keys allowed in [store] are: \
         raw_retention, group_commit_max, max_bytes",
    );
    assert_one(
        "\n[[source.mllp]]\nname = \"a\"\n\n[[source.mllp]]\nname = \"b\"\nport = 2576\nlisten = \"127.0.0.1:0\"\n",
        7,
        "source.mllp[1].port",
        "unknown key; remove it or correct its spelling; the keys allowed in [[source.mllp]] \
         are: name, listen, allow, max_connections, max_message_bytes, idle_timeout, \
         duplicate_window, commit_blocks",
    );
    assert_one(
        "[gatway]\nstate_dir = \"/x\"\n",
        1,
        "gatway",
        "unknown key; did you mean `gateway`? The keys allowed at the top level are: \
         gateway, log, store, deid, validate, sync, source",
    );
    assert_one(
        "[[source.serial]]\npath = \"/dev/ttyS0\"\nprotocl = \"lines\"\n",
        3,
        "source.serial[0].protocl",
        "unknown key; did you mean `protocol`? The keys allowed in [[source.serial]] are:",
    );
    assert_one(
        "[[source.seriel]]\npath = \"/dev/ttyS0\"\n",
        1,
        "source.seriel",
        "did you mean `serial`? The keys allowed in [source] are: mllp, serial",
    );
}

#[test]
fn an_unknown_key_does_not_hide_the_other_problems_of_its_table() {
    let all = problems("[[source.mllp]]\nlisen = \"x\"\nmax_connections = 0\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_has(&all, 2, "source.mllp[0].lisen", "did you mean `listen`?");
    assert_has(
        &all,
        3,
        "source.mllp[0].max_connections",
        "less than the minimum",
    );
}

#[test]
fn wrong_types_name_line_and_key() {
    assert_one(
        "[store]\ngroup_commit_max = \"512\"\n",
        2,
        "store.group_commit_max",
        "invalid type: string \"512\", expected a whole number without quotes; write a whole number",
    );
    assert_one(
        "[store]\nmax_bytes = 1.5\n",
        2,
        "store.max_bytes",
        "floating point",
    );
    assert_one("gateway = 5\n", 1, "gateway", "expected a [gateway] table");
    assert_one(
        "[gateway]\nstate_dir = 5\n",
        2,
        "gateway.state_dir",
        "expected a string",
    );
    assert_one(
        "[source]\nmllp = 5\n",
        2,
        "source.mllp",
        "[[source.mllp]] table (double brackets)",
    );
    assert_one(
        "[source.mllp]\nname = \"a\"\n",
        1,
        "source.mllp",
        "double brackets",
    );
    assert_one(
        "[[source.mllp]]\nallow = \"10.0.0.0/8\"\n",
        2,
        "source.mllp[0].allow",
        "expected a sequence; write a list of networks",
    );
    assert_one(
        "[[source.mllp]]\nidle_timeout = 600\n",
        2,
        "source.mllp[0].idle_timeout",
        "expected a duration in quotes",
    );
}

// --- each validation rule -------------------------------------------------

#[test]
fn state_dir_must_not_be_empty() {
    assert_one(
        "[gateway]\nstate_dir = \"\"\n",
        2,
        "gateway.state_dir",
        "the path is empty",
    );
    assert_one(
        "[gateway]\n\nstate_dir = \"  \"\n",
        3,
        "gateway.state_dir",
        "the path is empty",
    );
}

#[test]
fn log_level_must_be_known() {
    assert_one(
        "[log]\nlevel = \"verbose\"\n",
        2,
        "log.level",
        "\"verbose\" is not a log level",
    );
    assert_one("[log]\nlevel = \"INFO\"\n", 2, "log.level", "(lowercase)");
    assert_eq!(ok("[log]\nlevel = \"trace\"\n").log.level, LogLevel::Trace);
}

#[test]
fn raw_retention_is_a_duration_of_at_least_an_hour() {
    assert_one(
        "[store]\nraw_retention = \"59m\"\n",
        2,
        "store.raw_retention",
        "\"59m\" is shorter than the minimum of 1h",
    );
    assert_one(
        "[store]\nraw_retention = \"7 dayz\"\n",
        2,
        "store.raw_retention",
        "is not a duration",
    );
    assert_eq!(
        ok("[store]\nraw_retention = \"1h\"\n").store.raw_retention,
        Duration::from_secs(3600)
    );
    assert_eq!(
        ok("[store]\nraw_retention = \"1h 30m\"\n")
            .store
            .raw_retention,
        Duration::from_secs(5400)
    );
}

#[test]
fn group_commit_max_is_1_to_65536() {
    assert_one(
        "[store]\ngroup_commit_max = 0\n",
        2,
        "store.group_commit_max",
        "minimum of 1",
    );
    assert_one(
        "[store]\ngroup_commit_max = 65537\n",
        2,
        "store.group_commit_max",
        "65537 is more than the maximum of 65536",
    );
    assert_eq!(
        ok("[store]\ngroup_commit_max = 1\n").store.group_commit_max,
        1
    );
    assert_eq!(
        ok("[store]\ngroup_commit_max = 65536\n")
            .store
            .group_commit_max,
        65536
    );
}

#[test]
fn max_bytes_is_zero_or_at_least_one_mebibyte() {
    assert_one(
        "[store]\nmax_bytes = 1048575\n",
        2,
        "store.max_bytes",
        "1048575 is less than the minimum of 1048576 (1 MiB)",
    );
    assert_one(
        "[store]\nmax_bytes = -1\n",
        2,
        "store.max_bytes",
        "less than the minimum of 0",
    );
    assert_one(
        "[store]\nmax_bytes = 99999999999999999999\n",
        2,
        "store.max_bytes",
        "",
    );
    assert_eq!(ok("[store]\nmax_bytes = 0\n").store.max_bytes, None);
    assert_eq!(
        ok("[store]\nmax_bytes = 1048576\n").store.max_bytes,
        Some(1_048_576)
    );
}

#[test]
fn source_names_have_a_restricted_form() {
    let case = |name: &str, says: &str| {
        assert_one(
            &format!("[[source.mllp]]\nlisten = \"127.0.0.1:0\"\nname = {name:?}\n"),
            3,
            "source.mllp[0].name",
            says,
        );
    };
    case("", "the name is empty");
    case(
        &"a".repeat(65),
        "65 characters long, more than the maximum of 64",
    );
    case("Lab", "does not start with a lowercase letter");
    case("2lab", "does not start with a lowercase letter");
    case("-lab", "does not start with a lowercase letter");
    case("lab adt", "contains ' ', which is not allowed");
    case("lab.adt", "contains '.', which is not allowed");
    case("läb", "contains 'ä'");
    let config = ok(&format!("[[source.mllp]]\nname = \"{}\"\n", "a".repeat(64)));
    assert_eq!(config.sources.mllp[0].name.len(), 64);
    assert_eq!(
        ok("[[source.mllp]]\nname = \"lab_adt-2\"\n").sources.mllp[0].name,
        "lab_adt-2"
    );
}

#[test]
fn listen_is_an_ip_address_and_port() {
    let case = |listen: &str, says: &str| {
        assert_one(
            &format!("[[source.mllp]]\nlisten = {listen:?}\n"),
            2,
            "source.mllp[0].listen",
            says,
        );
    };
    case(
        "lab.example.org:2575",
        "\"lab.example.org\" is a host name, not an IP address",
    );
    case("localhost:2575", "use an IP address");
    case("127.0.0.1", "has no port");
    case("::1", "has no port");
    case("127.0.0.1:99999", "is not an IP address and port");
    case("", "is not an IP address and port");
    let listen = |text: &str| ok(text).sources.mllp[0].listen;
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    assert_eq!(
        Some(listen("[[source.mllp]]\nlisten = \"[::1]:0\"\n")),
        addr("[::1]:0")
    );
    assert_eq!(
        Some(listen("[[source.mllp]]\nlisten = \"0.0.0.0:2575\"\n")),
        addr("0.0.0.0:2575")
    );
}

#[test]
fn allow_entries_are_networks_or_addresses_each_with_its_own_line() {
    let text = "[[source.mllp]]\nallow = [\n  \"10.1.0.0/16\",\n  \"10.1.2.3/16\",\n  \"lab-pc\",\n  \"10.0.0.0/33\",\n]\n";
    let all = problems(text);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_has(
        &all,
        4,
        "source.mllp[0].allow[1]",
        "host bits set (the network is \"10.1.0.0/16\")",
    );
    assert_has(
        &all,
        5,
        "source.mllp[0].allow[2]",
        "\"lab-pc\" is not a CIDR network or IP address",
    );
    assert_has(&all, 6, "source.mllp[0].allow[3]", "not a CIDR network");
    let allow = ok("[[source.mllp]]\nallow = [\"10.1.0.0/16\", \"192.168.4.7\", \"::1\"]\n")
        .sources
        .mllp[0]
        .allow
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert_eq!(allow, ["10.1.0.0/16", "192.168.4.7/32", "::1/128"]);
}

#[test]
fn max_connections_is_1_to_10000() {
    let key = "source.mllp[0].max_connections";
    assert_one(
        "[[source.mllp]]\nmax_connections = 0\n",
        2,
        key,
        "minimum of 1",
    );
    assert_one(
        "[[source.mllp]]\nmax_connections = 10001\n",
        2,
        key,
        "maximum of 10000",
    );
    assert_eq!(
        ok("[[source.mllp]]\nmax_connections = 10000\n")
            .sources
            .mllp[0]
            .max_connections,
        10000
    );
    assert_eq!(
        ok("[[source.mllp]]\nmax_connections = 1\n").sources.mllp[0].max_connections,
        1
    );
}

#[test]
fn max_message_bytes_is_1_kib_to_1_gib() {
    let key = "source.mllp[0].max_message_bytes";
    assert_one(
        "[[source.mllp]]\nmax_message_bytes = 1023\n",
        2,
        key,
        "minimum of 1024",
    );
    assert_one(
        "[[source.mllp]]\nmax_message_bytes = 1073741825\n",
        2,
        key,
        "maximum of 1073741824",
    );
    let value = |n: u32| {
        ok(&format!("[[source.mllp]]\nmax_message_bytes = {n}\n"))
            .sources
            .mllp[0]
            .max_message_bytes
    };
    assert_eq!(value(1024), 1024);
    assert_eq!(value(1_073_741_824), 1_073_741_824);
}

#[test]
fn idle_timeout_is_at_least_a_second() {
    let key = "source.mllp[0].idle_timeout";
    assert_one(
        "[[source.mllp]]\nidle_timeout = \"999ms\"\n",
        2,
        key,
        "shorter than the minimum of 1s",
    );
    assert_one(
        "[[source.mllp]]\nidle_timeout = \"0s\"\n",
        2,
        key,
        "shorter than the minimum of 1s",
    );
    assert_one(
        "[[source.mllp]]\nidle_timeout = \"ten minutes\"\n",
        2,
        key,
        "is not a duration",
    );
    assert_eq!(
        ok("[[source.mllp]]\nidle_timeout = \"1s\"\n").sources.mllp[0].idle_timeout,
        Duration::from_secs(1)
    );
}

#[test]
fn duplicate_window_is_a_duration_and_zero_turns_it_off() {
    assert_one(
        "[[source.mllp]]\n\nduplicate_window = \"1 fortnight\"\n",
        3,
        "source.mllp[0].duplicate_window",
        "is not a duration",
    );
    assert_eq!(
        ok("[[source.mllp]]\nduplicate_window = \"0s\"\n")
            .sources
            .mllp[0]
            .duplicate_window,
        Duration::ZERO
    );
}

#[test]
fn commit_blocks_is_a_boolean() {
    assert_one(
        "[[source.mllp]]\ncommit_blocks = \"yes\"\n",
        2,
        "source.mllp[0].commit_blocks",
        "write true or false",
    );
    assert!(ok("[[source.mllp]]\ncommit_blocks = true\n").sources.mllp[0].commit_blocks);
}

// --- [deid] --------------------------------------------------------------

#[test]
fn date_policy_is_shift_or_year() {
    assert_one(
        "[deid]\ndate_policy = \"weekly\"\n",
        2,
        "deid.date_policy",
        "\"weekly\" is not a date policy; write \"shift\" (",
    );
    assert_one(
        "[deid]\ndate_policy = \"Year\"\n",
        2,
        "deid.date_policy",
        "or \"year\" (only the year is kept), lowercase",
    );
    assert_one(
        "[deid]\ndate_policy = 1\n",
        2,
        "deid.date_policy",
        "expected a string",
    );
    assert_eq!(
        ok("[deid]\ndate_policy = \"year\"\n").deid.date_policy,
        DatePolicyConfig::YearOnly
    );
    assert_eq!(
        ok("[deid]\ndate_policy = \"shift\"\n").deid.date_policy,
        DatePolicyConfig::Shift { max_days: 180 }
    );
}

#[test]
fn date_shift_max_days_is_1_to_3650_and_ignored_with_year() {
    let key = "deid.date_shift_max_days";
    assert_one(
        "[deid]\ndate_shift_max_days = 0\n",
        2,
        key,
        "0 is less than the minimum of 1; write a whole number of days from 1 to 3650",
    );
    assert_one(
        "[deid]\ndate_policy = \"shift\"\n\ndate_shift_max_days = 3651\n",
        4,
        key,
        "3651 is more than the maximum of 3650",
    );
    assert_one(
        "[deid]\ndate_shift_max_days = \"180\"\n",
        2,
        key,
        "expected a whole number",
    );
    let policy = |text: &str| ok(text).deid.date_policy;
    assert_eq!(
        policy("[deid]\ndate_shift_max_days = 1\n"),
        DatePolicyConfig::Shift { max_days: 1 }
    );
    assert_eq!(
        policy("[deid]\ndate_policy = \"shift\"\ndate_shift_max_days = 3650\n"),
        DatePolicyConfig::Shift { max_days: 3650 }
    );
    // With "year" the number does not apply: its range is not checked (its type still is).
    assert_eq!(
        policy("[deid]\ndate_policy = \"year\"\ndate_shift_max_days = 0\n"),
        DatePolicyConfig::YearOnly
    );
    assert_eq!(
        policy("[deid]\ndate_shift_max_days = 99999\ndate_policy = \"year\"\n"),
        DatePolicyConfig::YearOnly
    );
    assert_one(
        "[deid]\ndate_policy = \"year\"\ndate_shift_max_days = \"x\"\n",
        3,
        key,
        "expected a whole number",
    );
    // An unknown policy does not hide a wrong number.
    let all = problems("[deid]\ndate_policy = \"month\"\ndate_shift_max_days = 0\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_has(&all, 2, "deid.date_policy", "not a date policy");
    assert_has(&all, 3, key, "less than the minimum of 1");
}

#[test]
fn pseudonym_scope_is_site_or_network() {
    assert_one(
        "[deid]\npseudonym_scope = \"global\"\n",
        2,
        "deid.pseudonym_scope",
        "\"global\" is not a pseudonym scope; write \"site\" (this gateway's own secret) or \"network\"",
    );
    let config = ok("[deid]\npseudonym_scope = \"site\"\nnetwork_key_file = \"\"\n");
    assert_eq!(config.deid.pseudonym_scope, PseudonymScope::Site);
    assert_eq!(config.deid.network_key_file, None);
}

#[test]
fn network_scope_needs_a_key_file_and_names_both_keys() {
    assert_one(
        "[deid]\npseudonym_scope = \"network\"\n",
        2,
        "deid.pseudonym_scope",
        "\"network\" needs the secret shared by the network, but deid.network_key_file is not \
         set; set network_key_file to the shared secret file",
    );
    assert_one(
        "[deid]\npseudonym_scope = \"network\"\nnetwork_key_file = \"\"\n",
        2,
        "deid.pseudonym_scope",
        "but deid.network_key_file is empty (line 3); set network_key_file",
    );
    assert_one(
        "[deid]\nnetwork_key_file = \" \"\n\npseudonym_scope = \"network\"\n",
        4,
        "deid.pseudonym_scope",
        "deid.network_key_file is empty (line 2)",
    );
    let config = ok(
        "[deid]\npseudonym_scope = \"network\"\nnetwork_key_file = \"/etc/wardlink/network.key\"\n",
    );
    assert_eq!(config.deid.pseudonym_scope, PseudonymScope::Network);
    assert_eq!(
        config.deid.network_key_file,
        Some(PathBuf::from("/etc/wardlink/network.key"))
    );
    // Not read while validating: the daemon checks the file.
    let config =
        ok("[deid]\npseudonym_scope = \"network\"\nnetwork_key_file = \"/nonexistent/k\"\n");
    assert_eq!(
        config.deid.network_key_file,
        Some(PathBuf::from("/nonexistent/k"))
    );
}

#[test]
fn a_key_file_with_site_scope_names_both_keys() {
    assert_one(
        "[deid]\nnetwork_key_file = \"/etc/wardlink/network.key\"\n",
        2,
        "deid.network_key_file",
        "a network key file is set, but deid.pseudonym_scope is \"site\" (the default), which \
         uses no network secret; write pseudonym_scope = \"network\" to use it, or \
         network_key_file = \"\"",
    );
    assert_one(
        "[deid]\npseudonym_scope = \"site\"\n\nnetwork_key_file = \"/k\"\n",
        4,
        "deid.network_key_file",
        "deid.pseudonym_scope is \"site\" (line 2)",
    );
    // An unknown scope is reported once, without guessing about the key file.
    assert_one(
        "[deid]\npseudonym_scope = \"sites\"\nnetwork_key_file = \"/k\"\n",
        2,
        "deid.pseudonym_scope",
        "not a pseudonym scope",
    );
    assert_one(
        "[deid]\nnetwork_key_file = 5\n",
        2,
        "deid.network_key_file",
        "expected a string; write the path of the shared network secret file",
    );
}

#[test]
fn override_fields_are_seg_n_or_seg_n_c() {
    let case = |field: &str, key: &str, says: &str| {
        assert_one(
            &format!("[deid.overrides]\n\"PID-3\" = \"keep\"\n{field:?} = \"remove\"\n"),
            3,
            &format!("deid.overrides.{key}"),
            says,
        );
    };
    let form = "write the field in quotes as \"SEG-N\" or \"SEG-N.C\"";
    case("", "\"\"", "the field is empty");
    case("PID", "PID", "\"PID\" has no field number");
    case("pid-11", "pid-11", "\"pid\" is not a segment name");
    case("1ID-11", "1ID-11", "\"1ID\" is not a segment name");
    case(
        "PI-11",
        "PI-11",
        &format!("\"PI\" is not a segment name; {form}"),
    );
    case(
        "PID-0",
        "PID-0",
        "\"0\" is not a field number from 1 to 999",
    );
    case("PID-1000", "PID-1000", "\"1000\" is not a field number");
    case("PID-011", "PID-011", "\"011\" is not a field number");
    case("PID-", "PID-", "\"\" is not a field number");
    case(
        "PID-11.0",
        "\"PID-11.0\"",
        "\"0\" is not a component number from 1 to 99",
    );
    case("PID-11.100", "\"PID-11.100\"", "\"100\" is not a component");
    case("PID-11.5.1", "\"PID-11.5.1\"", "\"5.1\" is not a component");
    case(
        "PID-11:TX",
        "\"PID-11:TX\"",
        "\"11:TX\" is not a field number",
    );
    // A wrong field and a wrong action are two problems.
    let all = problems("[deid.overrides]\n\"PID-0\" = \"kept\"\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_has(&all, 2, "deid.overrides.PID-0", "is not a field number");
    assert_has(&all, 2, "deid.overrides.PID-0", "\"kept\" is not an action");
}

#[test]
fn override_actions_are_the_five_names() {
    let key = "deid.overrides.\"PID-11.5\"";
    let actions =
        "write one of \"remove\", \"pseudonymize\", \"generalize\", \"shift_date\", \"keep\"";
    assert_one(
        "[deid.overrides]\n\"PID-11.5\" = \"delete\"\n",
        2,
        key,
        &format!("\"delete\" is not an action; {actions}"),
    );
    assert_one(
        "[deid.overrides]\n\"PID-11.5\" = \"shift-date\"\n",
        2,
        key,
        "\"shift-date\" is not an action",
    );
    assert_one(
        "[deid.overrides]\n\"PID-11.5\" = \"Keep\"\n",
        2,
        key,
        "\"Keep\" is not an action",
    );
    assert_one(
        "[deid.overrides]\n\"PID-11.5\" = 5\n",
        2,
        key,
        "invalid type: integer `5`, expected an action in quotes",
    );
    assert_one(
        "[deid.overrides]\n\"PID-11.5\" = [\"keep\"]\n",
        2,
        key,
        actions,
    );
    for action in OverrideAction::ALL {
        let config = ok(&format!(
            "[deid.overrides]\n\"PID-11.5\" = \"{}\"\n",
            action.as_str()
        ));
        assert_eq!(config.deid.overrides[0].action, action);
    }
    let names: Vec<&str> = OverrideAction::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(
        names,
        ["remove", "pseudonymize", "generalize", "shift_date", "keep"]
    );
}

#[test]
fn an_unquoted_field_with_a_component_is_explained() {
    assert_one(
        "[deid.overrides]\nPID-11.5 = \"keep\"\n",
        2,
        "deid.overrides.PID-11.5",
        "the value is a table: without quotes, PID-11.5 is read as the key PID-11 holding a \
         table with the key 5; write the field in quotes, e.g. \"PID-11.5\" = \"generalize\"",
    );
    assert_one(
        "[deid.overrides.PID]\nx = \"keep\"\n",
        1,
        "deid.overrides.PID",
        "the value is a table, not an action",
    );
    // A field without a component needs no quotes.
    assert_eq!(
        ok("[deid.overrides]\nPV1-3 = \"keep\"\n").deid.overrides[0].field,
        "PV1-3"
    );
}

#[test]
fn overrides_keep_file_order_and_lines_and_are_not_unknown_keys() {
    let config = ok("[deid.overrides]\n\"PV1-3\" = \"keep\"\n\n\"PID-11.5\" = \"shift_date\"\nOBX-5 = \"remove\"\n");
    assert_eq!(
        config.deid.overrides,
        [
            FieldOverrideConfig {
                field: "PV1-3".to_owned(),
                action: OverrideAction::Keep,
                line: Some(2),
            },
            FieldOverrideConfig {
                field: "PID-11.5".to_owned(),
                action: OverrideAction::ShiftDate,
                line: Some(4),
            },
            FieldOverrideConfig {
                field: "OBX-5".to_owned(),
                action: OverrideAction::Remove,
                line: Some(5),
            },
        ]
    );
    let inline = ok("[deid]\noverrides = { \"PID-3\" = \"pseudonymize\" }\n");
    assert_eq!(inline.deid.overrides[0].line, Some(2));
    assert!(ok("[deid.overrides]\n").deid.overrides.is_empty());
}

#[test]
fn deid_and_validate_tables_check_their_keys_and_types() {
    assert_one(
        "[deid]\ndate_shift_days = 30\n",
        2,
        "deid.date_shift_days",
        "unknown key; did you mean `date_shift_max_days`? The keys allowed in [deid] are: \
         date_policy, date_shift_max_days, pseudonym_scope, network_key_file, overrides",
    );
    assert_one(
        "[validate]\nmax_agee = \"1d\"\n",
        2,
        "validate.max_agee",
        "did you mean `max_age`? The keys allowed in [validate] are: max_future_skew, max_age",
    );
    assert_one("deid = 3\n", 1, "deid", "expected a [deid] table");
    assert_one(
        "validate = \"yes\"\n",
        1,
        "validate",
        "expected a [validate] table",
    );
    assert_one(
        "[deid]\noverrides = 5\n",
        2,
        "deid.overrides",
        "expected a [deid.overrides] table; write it as a [deid.overrides] table",
    );
}

// --- [validate] -----------------------------------------------------------

#[test]
fn max_future_skew_is_at_least_a_second() {
    let key = "validate.max_future_skew";
    assert_one(
        "[validate]\nmax_future_skew = \"999ms\"\n",
        2,
        key,
        "\"999ms\" is shorter than the minimum of 1s; write a duration of at least 1s",
    );
    assert_one(
        "[validate]\nmax_future_skew = \"0s\"\n",
        2,
        key,
        "shorter than the minimum of 1s",
    );
    assert_one(
        "[validate]\nmax_future_skew = 300\n",
        2,
        key,
        "expected a duration in quotes",
    );
    assert_eq!(
        ok("[validate]\nmax_future_skew = \"1s\"\n")
            .validate
            .max_future_skew,
        Duration::from_secs(1)
    );
}

#[test]
fn max_age_is_at_least_an_hour() {
    let key = "validate.max_age";
    assert_one(
        "[validate]\n\nmax_age = \"59m\"\n",
        3,
        key,
        "\"59m\" is shorter than the minimum of 1h; write a duration of at least 1h in quotes, e.g. \"30d\"",
    );
    assert_one(
        "[validate]\nmax_age = \"a month\"\n",
        2,
        key,
        "is not a duration",
    );
    assert_eq!(
        ok("[validate]\nmax_age = \"1h\"\n").validate.max_age,
        Duration::from_secs(3600)
    );
    assert_eq!(
        ok("[validate]\nmax_age = \"365d\"\n").validate.max_age,
        Duration::from_secs(365 * 86_400)
    );
}

// --- [sync] ---------------------------------------------------------------

const KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

#[test]
fn sync_is_off_by_default_and_on_with_a_url_and_key() {
    let off = ok("");
    assert_eq!(off.sync, SyncConfig::default());
    assert!(off.sync.collector.is_none());
    assert_eq!(off.sync.batch_max_events, 5000);
    assert_eq!(off.sync.batch_max_age, Duration::from_secs(5));
    assert_eq!(off.sync.outbox_max_bytes, Some(1 << 30));
    let on = ok(&format!(
        "[sync]\ncollector_url = \"https://collector.example.org:8443/\"\ncollector_public_key = \"{KEY}\"\nca_file = \"/etc/wardlink/ca.pem\"\nclient_cert_file = \"/etc/wardlink/c.pem\"\nclient_key_file = \"/etc/wardlink/k.pem\"\nbatch_max_events = 100\nbatch_max_age = \"250ms\"\noutbox_max_bytes = 0\nretry_backoff_min = \"200ms\"\nretry_backoff_max = \"2s\"\n"
    ));
    assert_eq!(
        on.sync,
        SyncConfig {
            collector: Some(CollectorTarget {
                url: "https://collector.example.org:8443".into(),
                public_key: KEY.into(),
                ca_file: Some(PathBuf::from("/etc/wardlink/ca.pem")),
                client_cert: Some(ClientCert {
                    cert_file: PathBuf::from("/etc/wardlink/c.pem"),
                    key_file: PathBuf::from("/etc/wardlink/k.pem"),
                }),
            }),
            batch_max_events: 100,
            batch_max_age: Duration::from_millis(250),
            outbox_max_bytes: None,
            retry_backoff_min: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(2),
        }
    );
    let local = ok(&format!(
        "[sync]\ncollector_url = \"http://127.0.0.1:8443\"\ncollector_public_key = \"{KEY}\"\n"
    ));
    assert!(local.sync.collector.is_some_and(|c| c.is_plain_http()));
}

#[test]
fn collector_url_is_https_or_loopback_http() {
    let key = "sync.collector_url";
    let with = |url: &str| {
        format!("[sync]\ncollector_url = \"{url}\"\ncollector_public_key = \"{KEY}\"\n")
    };
    assert_one(
        &with("http://10.0.0.5:8443"),
        2,
        key,
        "not loopback; batches cross the network only over https://",
    );
    assert_one(
        &with("collector:8443"),
        2,
        key,
        "does not start with https://",
    );
    assert_one(&with("https://host:0"), 2, key, "is not a port");
    assert_one("[sync]\ncollector_url = 8443\n", 2, key, "invalid type");
}

#[test]
fn a_collector_url_needs_the_collector_public_key() {
    assert_one(
        "[sync]\ncollector_url = \"https://c.example.org\"\n",
        1,
        "sync.collector_public_key",
        "the collector's public key is not set",
    );
    assert_one(
        "[sync]\ncollector_url = \"https://c.example.org\"\ncollector_public_key = \"ABCD\"\n",
        3,
        "sync.collector_public_key",
        "is not 64 lowercase hex digits",
    );
    // Sync off: the key is not needed.
    assert!(ok("[sync]\ncollector_public_key = \"\"\n")
        .sync
        .collector
        .is_none());
}

#[test]
fn client_certificate_needs_both_files_and_https() {
    let base = format!(
        "[sync]\ncollector_url = \"https://c.example.org\"\ncollector_public_key = \"{KEY}\"\n"
    );
    assert_one(
        &format!("{base}client_cert_file = \"/c.pem\"\n"),
        4,
        "sync.client_cert_file",
        "sync.client_cert_file is set but sync.client_key_file is not",
    );
    assert_one(
        &format!("{base}client_key_file = \"/k.pem\"\n"),
        4,
        "sync.client_key_file",
        "is set but sync.client_cert_file is not",
    );
    assert_one(
        &format!(
            "[sync]\ncollector_url = \"http://127.0.0.1:1\"\ncollector_public_key = \"{KEY}\"\nca_file = \"/ca.pem\"\n"
        ),
        4,
        "sync.ca_file",
        "plain http://",
    );
}

#[test]
fn sync_limits_name_line_and_key() {
    assert_one(
        "[sync]\nbatch_max_events = 0\n",
        2,
        "sync.batch_max_events",
        "0 is less than the minimum of 1",
    );
    assert_one(
        "[sync]\nbatch_max_events = 100001\n",
        2,
        "sync.batch_max_events",
        "more than the maximum of 100000",
    );
    assert_one(
        "[sync]\nbatch_max_age = \"50ms\"\n",
        2,
        "sync.batch_max_age",
        "shorter than the minimum of 100ms",
    );
    assert_one(
        "[sync]\noutbox_max_bytes = 1000\n",
        2,
        "sync.outbox_max_bytes",
        "less than the minimum of 1048576",
    );
    assert_one(
        "[sync]\nretry_backoff_min = \"10s\"\nretry_backoff_max = \"1s\"\n",
        3,
        "sync.retry_backoff_max",
        "is shorter than sync.retry_backoff_min",
    );
    assert_one(
        "[sync]\nretry_backof_max = \"1s\"\n",
        2,
        "sync.retry_backof_max",
        "did you mean `retry_backoff_max`?",
    );
}

// --- names and resources across sources -----------------------------------

#[test]
fn duplicate_names_name_both_keys() {
    let text = "[[source.mllp]]\nname = \"adt\"\nlisten = \"127.0.0.1:2575\"\n\n[[source.mllp]]\nname = \"adt\"\nlisten = \"127.0.0.1:2576\"\n";
    assert_one(
        text,
        6,
        "source.mllp[1].name",
        "\"adt\" is already used by source.mllp[0].name (line 2); names must be unique across all sources",
    );
}

#[test]
fn two_listeners_on_one_address_name_both_keys() {
    let text = "[[source.mllp]]\nname = \"a\"\nlisten = \"0.0.0.0:2575\"\n[[source.mllp]]\nname = \"b\"\nlisten = \"127.0.0.1:2575\"\n";
    assert_one(
        text,
        6,
        "source.mllp[1].listen",
        "\"127.0.0.1:2575\" overlaps \"0.0.0.0:2575\" of source.mllp[0].listen (line 3)",
    );
    let same = "[[source.mllp]]\nname = \"a\"\nlisten = \"[::1]:2575\"\n[[source.mllp]]\nname = \"b\"\nlisten = \"[::1]:2575\"\n";
    assert_one(
        same,
        6,
        "source.mllp[1].listen",
        "\"[::1]:2575\" is already used by source.mllp[0].listen (line 3)",
    );
}

#[test]
fn listeners_that_do_not_overlap_are_fine() {
    let config = ok("[[source.mllp]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\
         [[source.mllp]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n\
         [[source.mllp]]\nname = \"c\"\nlisten = \"127.0.0.1:2575\"\n\
         [[source.mllp]]\nname = \"d\"\nlisten = \"127.0.0.2:2575\"\n\
         [[source.mllp]]\nname = \"e\"\nlisten = \"[::1]:2575\"\n\
         [[source.mllp]]\nname = \"f\"\nlisten = \"127.0.0.1:2576\"\n");
    assert_eq!(config.sources.len(), 6);
}

#[test]
fn two_empty_listener_tables_collide_on_their_default_name_and_address() {
    let all = problems("[[source.mllp]]\n\n[[source.mllp]]\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_has(
        &all,
        3,
        "source.mllp[1].name",
        "\"mllp\" is already used by source.mllp[0].name (line 1)",
    );
    assert_has(
        &all,
        3,
        "source.mllp[1].listen",
        "\"127.0.0.1:2575\" is already used by source.mllp[0].listen (line 1)",
    );
}

// --- whole files ----------------------------------------------------------

#[test]
fn a_full_file_maps_to_the_validated_types() {
    let config = ok(r#"
[gateway]
state_dir = "/var/lib/wardlink"
[log]
level = "warn"
[store]
raw_retention = "2d"
group_commit_max = 64
max_bytes = 10737418240
[[source.mllp]]
name = "lab"
listen = "0.0.0.0:2576"
allow = ["10.1.0.0/16"]
max_connections = 8
max_message_bytes = 2048
idle_timeout = "30s"
duplicate_window = "0s"
commit_blocks = true
[deid]
date_policy = "shift"
date_shift_max_days = 30
pseudonym_scope = "network"
network_key_file = "/etc/wardlink/network.key"
[deid.overrides]
"PID-11.5" = "remove"
[validate]
max_future_skew = "30s"
max_age = "365d"
"#);
    assert_eq!(config.gateway.state_dir, PathBuf::from("/var/lib/wardlink"));
    assert_eq!(config.log.level.as_str(), "warn");
    assert_eq!(config.store.raw_retention, Duration::from_secs(2 * 86_400));
    assert_eq!(config.store.group_commit_max, 64);
    assert_eq!(config.store.max_bytes, Some(10_737_418_240));
    let lab = &config.sources.mllp[0];
    assert_eq!(lab.name, "lab");
    assert_eq!(lab.listen.to_string(), "0.0.0.0:2576");
    assert_eq!(lab.allow.len(), 1);
    assert_eq!(lab.max_connections, 8);
    assert_eq!(lab.max_message_bytes, 2048);
    assert_eq!(lab.idle_timeout, Duration::from_secs(30));
    assert_eq!(lab.duplicate_window, Duration::ZERO);
    assert!(lab.commit_blocks);
    assert_eq!(
        config.deid,
        DeidConfig {
            date_policy: DatePolicyConfig::Shift { max_days: 30 },
            pseudonym_scope: PseudonymScope::Network,
            network_key_file: Some(PathBuf::from("/etc/wardlink/network.key")),
            overrides: vec![FieldOverrideConfig {
                field: "PID-11.5".to_owned(),
                action: OverrideAction::Remove,
                line: Some(25),
            }],
            ..DeidConfig::default()
        }
    );
    assert_eq!(
        config.validate,
        ValidateConfig {
            max_future_skew: Duration::from_secs(30),
            max_age: Duration::from_secs(365 * 86_400),
        }
    );
}

#[test]
fn absent_keys_take_their_defaults() {
    let config = ok("[[source.mllp]]\nname = \"x\"\n");
    assert_eq!(
        config.sources.mllp[0],
        MllpSource {
            name: "x".to_owned(),
            ..MllpSource::default()
        }
    );
    assert_eq!(config.log.level.as_str(), "info");
    assert_eq!(
        config.deid,
        DeidConfig {
            date_policy: DatePolicyConfig::Shift { max_days: 180 },
            pseudonym_scope: PseudonymScope::Site,
            network_key_file: None,
            overrides: Vec::new(),
            ..DeidConfig::default()
        }
    );
    assert_eq!(
        config.validate,
        ValidateConfig {
            max_future_skew: Duration::from_secs(5 * 60),
            max_age: Duration::from_secs(30 * 86_400),
        }
    );
    assert!(ok("").sources.is_empty());
}

#[test]
fn the_embedded_default_is_valid() {
    match wardlink_config::embedded_default() {
        Ok(config) => {
            assert_eq!(config.sources.mllp.len(), 1);
            assert_eq!(config.sources.mllp[0].listen.to_string(), "127.0.0.1:2575");
        }
        Err(e) => panic!("{e}"),
    }
    assert!(DEFAULT_TOML.contains("# [[source.mllp]]"));
}

// --- files ----------------------------------------------------------------

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wardlink-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            panic!("{}: {e}", path.display());
        }
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_err(path: &Path) -> ConfigError {
    match load_file(path) {
        Ok(loaded) => panic!("{} loaded: {loaded:#?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn an_unreadable_file_is_an_error_not_the_defaults() {
    let scratch = Scratch::new("unreadable");
    let missing = scratch.0.join("missing.toml");
    let err = load_err(&missing);
    assert!(matches!(
        &err,
        ConfigError::Unreadable { error, .. } if error.kind() == std::io::ErrorKind::NotFound
    ));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )),
        "{text}"
    );
    assert!(text.contains("os error 2"), "{text}");
    assert!(err.problems().is_empty());

    let err = load_err(&scratch.0);
    assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
}

#[test]
fn load_file_reports_problems_under_the_file_name() {
    let scratch = Scratch::new("problems");
    let path = scratch.write("bad.toml", b"[store]\ngroup_commit_max = 0\n");
    let err = load_err(&path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2: store.group_commit_max: ", path.display())),
        "{err}"
    );
    let path = scratch.write("latin1.toml", b"[gateway]\nstate_dir = \"/d\xe9\"\n");
    let err = load_err(&path);
    assert_eq!(err.problems().len(), 1);
    assert_eq!(err.problems()[0].line, Some(2));
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_world_writable_file_loads_with_a_warning() -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("writable");
    let path = scratch.write("wardlink.toml", DEFAULT_TOML.as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    match load_file(&path) {
        Ok(loaded) => assert_eq!(loaded.warnings, Vec::<String>::new()),
        Err(e) => panic!("{e}"),
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    match load_file(&path) {
        Ok(loaded) => {
            assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
            assert!(loaded.warnings[0].contains("writable by every user"));
            assert!(loaded.warnings[0].starts_with(&path.display().to_string()));
        }
        Err(e) => panic!("{e}"),
    }
    Ok(())
}

#[test]
fn a_file_without_sources_loads_with_a_warning() {
    let scratch = Scratch::new("nosources");
    let path = scratch.write("wardlink.toml", b"[log]\nlevel = \"debug\"\n");
    match load_file(&path) {
        Ok(loaded) => {
            assert!(loaded.config.sources.is_empty());
            assert!(
                loaded
                    .warnings
                    .iter()
                    .any(|w| w.contains("no source is configured")),
                "{:?}",
                loaded.warnings
            );
        }
        Err(e) => panic!("{e}"),
    }
}

//! Preset + values → bash script. The one rule: a *value* is only ever written inside single
//! quotes, where bash interprets nothing, so no value can become code. Step bodies are author
//! code and are pasted as written (they reference `"$var"`).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::parse::split_condition;
use crate::{Preset, RenderError};

/// A rendered script and what went into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub script: String,
    /// Every declared variable with the value the script assigns (given, default or unset).
    pub resolved: Map<String, Value>,
    /// One line per thing the caller may want to know, e.g. an unknown variable that was ignored.
    pub warnings: Vec<String>,
}

/// Quotes `text` as one bash word that expands to exactly `text`: wrapped in single quotes, each
/// `'` written as `'\''` (close the quote, an escaped quote, reopen). Inside single quotes bash
/// gives no character a meaning, so `$()`, backticks, `\` and newlines stay data. A NUL byte
/// cannot be represented in a bash string at all: callers refuse it before quoting.
pub fn shell_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    push_quoted(&mut quoted, text);
    quoted
}

fn push_quoted(out: &mut String, text: &str) {
    out.push('\'');
    for (i, piece) in text.split('\'').enumerate() {
        if i > 0 {
            out.push_str("'\\''");
        }
        out.push_str(piece);
    }
    out.push('\'');
}

/// The timestamp of each announcement, in UTC so logs from many nodes line up.
const NOW: &str = r#""$(date -u +%Y-%m-%dT%H:%M:%SZ)""#;

impl Preset {
    /// Resolves `values` against the declared variables (defaults filled in, every rule checked;
    /// unknown names ignored with a warning; JSON `null` counts as not given) and renders the
    /// script. The same preset and values always give the same bytes.
    pub fn render(&self, values: &Map<String, Value>) -> Result<Rendered, RenderError> {
        let mut unknown: Vec<&String> = values
            .keys()
            .filter(|name| self.variable(name).is_none())
            .collect();
        // Sorted, so the warnings do not depend on the map's iteration order.
        unknown.sort();
        let warnings = unknown
            .into_iter()
            .map(|name| format!("unknown variable {name} ignored"))
            .collect();

        let mut resolved = Map::new();
        let mut script =
            String::with_capacity(512 + self.steps.iter().map(|s| s.run.len() + 160).sum::<usize>());
        let _ = write!(
            script,
            "#!/usr/bin/env bash\n\
             # {} {} — rendered by HyprBox\n\
             # A preset need not use every variable it declares:\n\
             # shellcheck disable=SC2034\n\
             set -euo pipefail\n",
            self.name, self.version
        );
        if !self.variables.is_empty() {
            script.push('\n');
        }
        for variable in &self.variables {
            let given = values.get(&variable.name).filter(|v| !v.is_null());
            // "Required" means a real value: an empty string or list is as good as missing
            // (checked before the other rules, so the message says what is wrong).
            let is_empty = |v: &Value| {
                matches!(v, Value::String(s) if s.is_empty())
                    || matches!(v, Value::Array(items) if items.is_empty())
            };
            let required_error =
                || RenderError::new(&variable.name, format!("{} is required", variable.name));
            if variable.required && given.is_some_and(is_empty) {
                return Err(required_error());
            }
            let value = match (given, &variable.default) {
                (Some(input), _) => variable.resolve(input)?,
                (None, Some(default)) => default.clone(),
                (None, None) if variable.required => return Err(required_error()),
                (None, None) => variable.unset_value(),
            };
            if variable.required && is_empty(&value) {
                return Err(required_error());
            }
            push_assignment(&mut script, &variable.name, &value);
            resolved.insert(variable.name.clone(), value);
        }

        let total = self.steps.len();
        for (index, step) in self.steps.iter().enumerate() {
            let number = index + 1;
            script.push('\n');
            let guard = step.condition.as_deref().map(split_condition);
            if let Some((negated, variable)) = guard {
                let op = if negated { "!=" } else { "==" };
                let _ = writeln!(script, "if [[ \"${variable}\" {op} true ]]; then");
            }
            let _ = write!(script, "printf '[%s] ==> step {number}/{total}: %s\\n' {NOW} ");
            push_quoted(&mut script, &step.name);
            script.push('\n');
            script.push_str(&step.run);
            if !step.run.ends_with('\n') {
                script.push('\n');
            }
            if let Some((negated, variable)) = guard {
                let reason = if negated {
                    format!("{variable} is true")
                } else {
                    format!("{variable} is not true")
                };
                let _ = write!(
                    script,
                    "else\nprintf '[%s] ==> step {number}/{total}: %s (skipped: {reason})\\n' {NOW} "
                );
                push_quoted(&mut script, &step.name);
                script.push_str("\nfi\n");
            }
        }
        let _ = write!(script, "\nprintf '[%s] ==> %s: all {total} steps done\\n' {NOW} ");
        push_quoted(&mut script, &self.name);
        script.push('\n');

        Ok(Rendered {
            script,
            resolved,
            warnings,
        })
    }
}

/// `name='value'`, `name=('a' 'b')` for a list, `name=''` for an unset integer or enum.
fn push_assignment(out: &mut String, name: &str, value: &Value) {
    out.push_str(name);
    out.push('=');
    match value {
        Value::Array(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                push_quoted(out, item.as_str().unwrap_or_default());
            }
            out.push(')');
        }
        Value::String(text) => push_quoted(out, text),
        Value::Null => out.push_str("''"),
        other => push_quoted(out, &other.to_string()),
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parse;

    const DEMO: &str = r#"
name: demo
version: 1.2.3
description: Exercises every variable type
risk: low
variables:
  hostname: { type: string, required: true, pattern: "^[a-z0-9][a-z0-9.-]{0,62}$" }
  ssh_port: { type: integer, default: 22, min: 1, max: 65535 }
  enable_ufw: { type: boolean, default: true }
  extra_packages: { type: list, default: [] }
  tz: { type: enum, values: [UTC, Europe/Paris], default: UTC }
  note: { type: string, max: 10 }
  retries: { type: integer }
  verbose: { type: boolean }
  password: { type: string, secret: true }
steps:
  - name: Set hostname
    run: hostnamectl set-hostname "$hostname"
  - name: Firewall
    if: enable_ufw
    run: |
      ufw allow "$ssh_port"/tcp
  - name: Quiet
    if: "!verbose"
    run: echo quiet
"#;

    fn demo() -> Preset {
        parse(DEMO, "demo.yaml").unwrap()
    }

    fn values(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn refused(pairs: &[(&str, Value)]) -> RenderError {
        demo()
            .render(&values(pairs))
            .expect_err("the values should be refused")
    }

    #[test]
    fn a_value_with_quotes_is_quoted_so_it_stays_one_word() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("'"), r"''\'''");
        assert_eq!(shell_quote("$(rm -rf /) `id` \\ \n"), "'$(rm -rf /) `id` \\ \n'");
    }

    #[test]
    fn the_script_has_the_header_assignments_in_order_and_announced_steps() {
        let r = demo()
            .render(&values(&[
                ("hostname", json!("web-1")),
                ("ssh_port", json!("2222")),
                ("extra_packages", json!(["a", "b c"])),
            ]))
            .unwrap();
        let expected_head = "#!/usr/bin/env bash\n\
             # demo 1.2.3 — rendered by HyprBox\n\
             # A preset need not use every variable it declares:\n\
             # shellcheck disable=SC2034\n\
             set -euo pipefail\n\
             \n\
             hostname='web-1'\n\
             ssh_port='2222'\n\
             enable_ufw='true'\n\
             extra_packages=('a' 'b c')\n\
             tz='UTC'\n\
             note=''\n\
             retries=''\n\
             verbose='false'\n\
             password=''\n\
             \n\
             printf '[%s] ==> step 1/3: %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" 'Set hostname'\n\
             hostnamectl set-hostname \"$hostname\"\n";
        assert!(r.script.starts_with(expected_head), "{}", r.script);
        assert!(r.script.ends_with(
            "printf '[%s] ==> %s: all 3 steps done\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" 'demo'\n"
        ));
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn defaults_fill_what_was_not_given_and_unset_optionals_are_empty() {
        let r = demo()
            .render(&values(&[("hostname", json!("web-1")), ("tz", Value::Null)]))
            .unwrap();
        let expected = json!({
            "hostname": "web-1", "ssh_port": 22, "enable_ufw": true, "extra_packages": [],
            "tz": "UTC", "note": "", "retries": null, "verbose": false, "password": "",
        });
        assert_eq!(Value::Object(r.resolved), expected);
        assert!(r.script.contains("\nextra_packages=()\n"));
        assert!(r.script.contains("\nretries=''\n"));
    }

    #[test]
    fn a_missing_or_empty_required_variable_is_an_error_naming_it() {
        for given in [
            vec![],
            vec![("hostname", json!(""))],
            vec![("hostname", Value::Null)],
        ] {
            let e = refused(&given);
            assert_eq!(e.variable, "hostname");
            assert_eq!(e.message, "hostname is required");
        }
    }

    #[test]
    fn an_unknown_variable_is_ignored_with_a_warning() {
        let r = demo()
            .render(&values(&[
                ("hostname", json!("h")),
                ("zzz", json!(1)),
                ("aaa", json!("x")),
            ]))
            .unwrap();
        assert_eq!(
            r.warnings,
            ["unknown variable aaa ignored", "unknown variable zzz ignored"]
        );
        assert!(!r.script.contains("zzz"));
        assert!(!r.resolved.contains_key("aaa"));
    }

    #[test]
    fn values_breaking_a_rule_are_refused_naming_the_variable_and_the_rule() {
        let h = ("hostname", json!("web-1"));
        type Case<'a> = (Vec<(&'a str, Value)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![h.clone(), ("ssh_port", json!(70000))],
                "ssh_port",
                "ssh_port must be <= 65535",
            ),
            (
                vec![h.clone(), ("ssh_port", json!("0"))],
                "ssh_port",
                "ssh_port must be >= 1",
            ),
            (
                vec![h.clone(), ("ssh_port", json!("22a"))],
                "ssh_port",
                "ssh_port must be an integer",
            ),
            (
                vec![h.clone(), ("ssh_port", json!(22.5))],
                "ssh_port",
                "ssh_port must be an integer",
            ),
            (
                vec![h.clone(), ("enable_ufw", json!("yes"))],
                "enable_ufw",
                "enable_ufw must be true or false",
            ),
            (
                vec![h.clone(), ("tz", json!("Mars/Olympus"))],
                "tz",
                "tz must be one of UTC, Europe/Paris",
            ),
            (
                vec![("hostname", json!("Web_1"))],
                "hostname",
                "hostname must match the pattern ^[a-z0-9][a-z0-9.-]{0,62}$",
            ),
            (
                vec![("hostname", json!(42))],
                "hostname",
                "hostname must be a string",
            ),
            (
                vec![h.clone(), ("note", json!("01234567890"))],
                "note",
                "note must be at most 10 characters",
            ),
            (
                vec![h.clone(), ("extra_packages", json!([["nested"]]))],
                "extra_packages",
                "extra_packages must be a list of strings, numbers or booleans",
            ),
            (
                vec![h.clone(), ("extra_packages", json!({"a": 1}))],
                "extra_packages",
                "extra_packages must be a list",
            ),
            (
                vec![h.clone(), ("note", json!("a\0b"))],
                "note",
                "note must not contain a NUL byte",
            ),
            (
                vec![h.clone(), ("extra_packages", json!(["ok", "b\0d"]))],
                "extra_packages",
                "extra_packages must not contain a NUL byte",
            ),
        ];
        for (given, variable, message) in cases {
            let e = refused(&given);
            assert_eq!((e.variable.as_str(), e.message.as_str()), (variable, message));
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn cli_strings_are_accepted_for_integers_booleans_and_lists() {
        let r = demo()
            .render(&values(&[
                ("hostname", json!("h")),
                ("ssh_port", json!("2222")),
                ("enable_ufw", json!("false")),
                ("extra_packages", json!(" curl, htop ,,b c ")),
                ("verbose", json!(true)),
            ]))
            .unwrap();
        assert_eq!(r.resolved["ssh_port"], json!(2222));
        assert_eq!(r.resolved["enable_ufw"], json!(false));
        assert_eq!(r.resolved["extra_packages"], json!(["curl", "htop", "b c"]));
        assert!(r.script.contains("\nextra_packages=('curl' 'htop' 'b c')\n"));
        let from_json = demo()
            .render(&values(&[
                ("hostname", json!("h")),
                ("extra_packages", json!(["x", 1, true])),
            ]))
            .unwrap();
        assert!(from_json.script.contains("\nextra_packages=('x' '1' 'true')\n"));
    }

    #[test]
    fn a_list_renders_as_a_bash_array_that_bash_reads_back_item_by_item() {
        let r = demo()
            .render(&values(&[
                ("hostname", json!("h")),
                ("extra_packages", json!(["a b", "it's", "", "$x"])),
            ]))
            .unwrap();
        assert!(
            r.script.contains(r#"extra_packages=('a b' 'it'\''s' '' '$x')"#),
            "{}",
            r.script
        );
    }

    #[test]
    fn a_step_with_if_is_wrapped_in_a_guard_and_announces_its_skip() {
        let r = demo().render(&values(&[("hostname", json!("h"))])).unwrap();
        let guarded = "if [[ \"$enable_ufw\" == true ]]; then\n\
             printf '[%s] ==> step 2/3: %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" 'Firewall'\n\
             ufw allow \"$ssh_port\"/tcp\n\
             else\n\
             printf '[%s] ==> step 2/3: %s (skipped: enable_ufw is not true)\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" 'Firewall'\n\
             fi\n";
        assert!(r.script.contains(guarded), "{}", r.script);
        assert!(r.script.contains("if [[ \"$verbose\" != true ]]; then\n"));
        assert!(r.script.contains("(skipped: verbose is true)"));
    }

    #[test]
    fn rendering_is_deterministic() {
        let given = values(&[
            ("hostname", json!("web-1")),
            ("unknown_b", json!(1)),
            ("unknown_a", json!(2)),
            ("extra_packages", json!("x,y")),
        ]);
        let first = demo().render(&given).unwrap();
        for _ in 0..5 {
            assert_eq!(demo().render(&given).unwrap(), first);
        }
    }

    #[test]
    fn secrets_are_masked_by_redact_but_present_in_the_script() {
        let p = demo();
        let given = values(&[("hostname", json!("h")), ("password", json!("hunter2"))]);
        let r = p.render(&given).unwrap();
        assert!(r.script.contains("\npassword='hunter2'\n"));
        let shown = p.redact(&r.resolved);
        assert_eq!(shown["password"], json!("********"));
        assert_eq!(shown["hostname"], json!("h"));
    }

    #[test]
    fn an_unset_secret_is_shown_as_unset() {
        let p = demo();
        let shown = p.redact(&values(&[("password", json!("")), ("hostname", json!("h"))]));
        assert_eq!(shown["password"], json!(""));
        let shown = p.redact(&values(&[("password", Value::Null)]));
        assert_eq!(shown["password"], Value::Null);
    }

    #[test]
    fn the_summary_has_the_list_shape_of_the_api() {
        let s = demo().summary();
        assert_eq!(s["name"], "demo");
        assert_eq!(s["stepCount"], 3);
        assert_eq!(s["risk"], "low");
        assert_eq!(
            s["variables"][1],
            json!({"name": "ssh_port", "type": "integer", "required": false, "default": 22, "description": null})
        );
        let full = serde_json::to_value(demo()).unwrap();
        assert_eq!(full["timeoutSeconds"], 3600);
        assert_eq!(full["steps"][1]["if"], "enable_ufw");
        assert_eq!(full["variables"][4]["values"], json!(["UTC", "Europe/Paris"]));
        assert!(full.get("origin").is_none());
    }
}

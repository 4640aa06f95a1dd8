//! YAML → [`Preset`]: the file is read with serde-saphyr into a raw shape that keeps source
//! locations ([`Spanned`]), then every rule is checked so an error can name its line.

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::{LoadError, Preset, Risk, Step, VarType, Variable};

/// The timeout of a preset that does not give one.
pub const DEFAULT_TIMEOUT: &str = "1h";
/// The longest job timeout a preset may ask for: 7 days.
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;

/// The file as written. Unknown keys are errors at every level, so a typo (`stpes:`) cannot
/// silently drop a section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    name: Spanned<String>,
    version: Spanned<String>,
    description: Spanned<String>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    risk: Spanned<String>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    fixes: Vec<Spanned<String>>,
    #[serde(default)]
    variables: RawVariables,
    steps: Spanned<Vec<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    required: bool,
    default: Option<Spanned<Value>>,
    description: Option<String>,
    #[serde(default)]
    secret: bool,
    pattern: Option<Spanned<String>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
    values: Option<Spanned<Vec<Value>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    run: Spanned<String>,
    #[serde(rename = "if")]
    condition: Option<Spanned<String>>,
}

/// `variables:` is a mapping, but its order matters (it is the order of the assignments and of
/// the form in the UI), so it is read entry by entry instead of into a sorted map.
#[derive(Default)]
struct RawVariables(Vec<(Spanned<String>, RawVariable)>);

impl<'de> Deserialize<'de> for RawVariables {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = RawVariables;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of variable names to their definitions")
            }
            // `variables:` with nothing after it is an empty section, not an error.
            fn visit_unit<E>(self) -> Result<RawVariables, E> {
                Ok(RawVariables::default())
            }
            fn visit_none<E>(self) -> Result<RawVariables, E> {
                Ok(RawVariables::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawVariables, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawVariables(entries))
            }
        }
        deserializer.deserialize_any(Ordered)
    }
}

/// Parses and validates one YAML document. `origin` names the file in errors.
pub fn parse(source: &str, origin: &str) -> Result<Preset, LoadError> {
    let raw: RawPreset = serde_saphyr::from_str(source).map_err(|e| yaml_error(origin, &e))?;
    Validator { origin }.preset(raw)
}

/// serde-saphyr's own message, on one line and without the location suffix (the line goes in
/// [`LoadError::line`]) or its hint about parser options, which mean nothing to a preset author.
fn yaml_error(origin: &str, error: &serde_saphyr::Error) -> LoadError {
    let location = error.location();
    let line = location.and_then(|l| usize::try_from(l.line()).ok().filter(|l| *l > 0));
    let mut message = error.without_snippet().to_string();
    if let Some(l) = location {
        let suffix = format!(" at line {}, column {}", l.line(), l.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    let message = message
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .replace('\n', " ");
    LoadError::new(origin, line, message)
}

fn line_of<T>(spanned: &Spanned<T>) -> Option<usize> {
    usize::try_from(spanned.referenced.line()).ok().filter(|l| *l > 0)
}

struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn fail<T, S>(&self, at: &Spanned<S>, message: impl Into<String>) -> Result<T, LoadError> {
        Err(LoadError::new(self.origin, line_of(at), message))
    }

    fn preset(&self, raw: RawPreset) -> Result<Preset, LoadError> {
        let name = &raw.name.value;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return self.fail(
                &raw.name,
                format!("name must be 1 to 64 characters of a-z, 0-9 and '-' (got {name:?})"),
            );
        }
        if !is_semver(&raw.version.value) {
            return self.fail(
                &raw.version,
                format!(
                    "version must be a semantic version MAJOR.MINOR.PATCH (got {:?})",
                    raw.version.value
                ),
            );
        }
        if raw.description.value.trim().is_empty() {
            return self.fail(&raw.description, "description must not be empty");
        }
        let tags = self.labels("tags", &raw.tags)?;
        let targets = self.labels("targets", &raw.targets)?;
        let fixes = self.labels("fixes", &raw.fixes)?;
        let Some(risk) = Risk::parse(&raw.risk.value) else {
            return self.fail(
                &raw.risk,
                format!("risk must be low, medium or high (got {:?})", raw.risk.value),
            );
        };
        let (timeout, timeout_seconds) = match &raw.timeout {
            None => (DEFAULT_TIMEOUT.to_owned(), 3600),
            Some(t) => match parse_timeout(&t.value) {
                Ok(seconds) => (t.value.clone(), seconds),
                Err(problem) => return self.fail(t, problem),
            },
        };

        let mut variables: Vec<Variable> = Vec::with_capacity(raw.variables.0.len());
        for (key, def) in raw.variables.0 {
            variables.push(self.variable(key, def)?);
        }

        if raw.steps.value.is_empty() {
            return self.fail(&raw.steps, "steps must not be empty");
        }
        let mut steps = Vec::with_capacity(raw.steps.value.len());
        for step in raw.steps.value {
            steps.push(self.step(step, &variables)?);
        }

        Ok(Preset {
            name: name.clone(),
            version: raw.version.value,
            description: raw.description.value,
            tags,
            targets,
            risk,
            timeout,
            timeout_seconds,
            fixes,
            variables,
            steps,
            origin: self.origin.to_owned(),
        })
    }

    /// Tags, targets and finding types share one alphabet, so they can be used in URLs and
    /// filters without escaping.
    fn labels(&self, field: &str, items: &[Spanned<String>]) -> Result<Vec<String>, LoadError> {
        items
            .iter()
            .map(|item| {
                let text = &item.value;
                let ok = text.len() <= 64
                    && text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                    && text.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    });
                if ok {
                    Ok(text.clone())
                } else {
                    self.fail(
                        item,
                        format!(
                            "{field} entries must be lowercase words of a-z, 0-9, '.', '_' and '-' (got {text:?})"
                        ),
                    )
                }
            })
            .collect()
    }

    fn variable(&self, key: Spanned<String>, raw: RawVariable) -> Result<Variable, LoadError> {
        let name = key.value.clone();
        if !is_variable_name(&name) {
            return self.fail(
                &key,
                format!(
                    "variable name {name:?} must match ^[a-z_][a-z0-9_]{{0,63}}$ (and not be \"_\", which bash reserves)"
                ),
            );
        }
        let Some(kind) = VarType::parse(&raw.kind.value) else {
            return self.fail(
                &raw.kind,
                format!(
                    "variable {name}: type must be string, integer, boolean, list or enum (got {:?})",
                    raw.kind.value
                ),
            );
        };
        let default = raw.default.filter(|d| !d.value.is_null());
        if raw.required && default.is_some() {
            return self.fail(
                &key,
                format!("variable {name}: a required variable cannot have a default"),
            );
        }
        let regex = match &raw.pattern {
            None => None,
            Some(p) if !matches!(kind, VarType::String | VarType::List) => {
                return self.fail(
                    p,
                    format!(
                        "variable {name}: pattern applies only to string and list variables, not {}",
                        kind.as_str()
                    ),
                );
            }
            Some(p) => match regex::Regex::new(&p.value) {
                Ok(re) => Some(re),
                Err(e) => {
                    let detail = e.to_string().replace('\n', " ");
                    return self.fail(
                        p,
                        format!("variable {name}: pattern is not a valid regex: {detail}"),
                    );
                }
            },
        };
        for bound in [&raw.min, &raw.max].into_iter().flatten() {
            if matches!(kind, VarType::Boolean | VarType::Enum) {
                return self.fail(
                    bound,
                    format!(
                        "variable {name}: min and max apply to integer, string and list variables, not {}",
                        kind.as_str()
                    ),
                );
            }
            if kind != VarType::Integer && bound.value < 0 {
                return self.fail(
                    bound,
                    format!(
                        "variable {name}: min and max of a {} are lengths and cannot be negative",
                        kind.as_str()
                    ),
                );
            }
        }
        if let (Some(min), Some(max)) = (&raw.min, &raw.max)
            && min.value > max.value
        {
            return self.fail(
                min,
                format!(
                    "variable {name}: min ({}) is greater than max ({})",
                    min.value, max.value
                ),
            );
        }
        let values = match (&raw.values, kind) {
            (None, VarType::Enum) => {
                return self.fail(&key, format!("variable {name}: an enum needs values"));
            }
            (None, _) => Vec::new(),
            (Some(v), VarType::Enum) => {
                if v.value.is_empty() {
                    return self.fail(v, format!("variable {name}: values must not be empty"));
                }
                let mut texts = Vec::with_capacity(v.value.len());
                for value in &v.value {
                    match crate::values::scalar_text(value) {
                        Some(text) if !text.contains('\0') => texts.push(text),
                        _ => {
                            return self.fail(
                                v,
                                format!("variable {name}: values must be strings, numbers or booleans"),
                            );
                        }
                    }
                }
                texts
            }
            (Some(v), _) => {
                return self.fail(
                    v,
                    format!(
                        "variable {name}: values apply only to enum variables, not {}",
                        kind.as_str()
                    ),
                );
            }
        };
        let mut variable = Variable {
            name: name.clone(),
            kind,
            required: raw.required,
            default: None,
            description: raw.description,
            secret: raw.secret,
            pattern: raw.pattern.map(|p| p.value),
            min: raw.min.map(|m| m.value),
            max: raw.max.map(|m| m.value),
            values,
            regex,
        };
        // The default obeys the same rules as a value sent by a caller, and is stored normalized.
        if let Some(default) = default {
            match variable.resolve(&default.value) {
                Ok(normalized) => variable.default = Some(normalized),
                Err(e) => {
                    return self.fail(&default, format!("variable {name}: default: {}", e.message));
                }
            }
        }
        Ok(variable)
    }

    fn step(&self, raw: RawStep, variables: &[Variable]) -> Result<Step, LoadError> {
        let name = raw.name.value.trim();
        if name.is_empty() {
            return self.fail(&raw.name, "step name must not be empty");
        }
        if name.chars().any(char::is_control) {
            return self.fail(&raw.name, format!("step {name:?}: name must be one line"));
        }
        if raw.run.value.trim().is_empty() {
            return self.fail(&raw.run, format!("step {name:?}: run must not be empty"));
        }
        if raw.run.value.contains('\0') {
            return self.fail(
                &raw.run,
                format!("step {name:?}: run must not contain a NUL byte"),
            );
        }
        if let Some(condition) = &raw.condition {
            let (_, variable) = split_condition(&condition.value);
            match variables.iter().find(|v| v.name == variable) {
                None => {
                    return self.fail(
                        condition,
                        format!("step {name:?}: if names {variable:?}, which is not a declared variable"),
                    );
                }
                Some(v) if v.kind != VarType::Boolean => {
                    return self.fail(
                        condition,
                        format!(
                            "step {name:?}: if names {variable:?}, which is a {}, not a boolean",
                            v.kind.as_str()
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(Step {
            name: name.to_owned(),
            run: raw.run.value,
            condition: raw.condition.map(|c| c.value.trim().to_owned()),
        })
    }
}

/// `!dry_run` → (true, "dry_run"); `enable_ufw` → (false, "enable_ufw").
pub(crate) fn split_condition(condition: &str) -> (bool, &str) {
    let condition = condition.trim();
    match condition.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, condition),
    }
}

fn is_variable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    name != "_"
        && (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Semantic versioning 2.0.0: `MAJOR.MINOR.PATCH`, numbers without leading zeros, then an
/// optional `-pre.release` and `+build` made of dot-separated `[0-9A-Za-z-]+` identifiers.
fn is_semver(version: &str) -> bool {
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numeric =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let identifiers = |s: &str, numbers_strict: bool| {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!numbers_strict || !id.bytes().all(|b| b.is_ascii_digit()) || numeric(id))
        })
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| identifiers(p, true))
        && build.is_none_or(|b| identifiers(b, false))
}

/// `<n>s|m|h|d`, at least one second and at most [`MAX_TIMEOUT_SECONDS`].
fn parse_timeout(text: &str) -> Result<u64, String> {
    let malformed =
        || format!("timeout must be a whole number followed by s, m, h or d, like 15m (got {text:?})");
    let unit = text.chars().last().ok_or_else(malformed)?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(malformed()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let seconds = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(factor));
    match seconds {
        Some(0) => Err("timeout must be at least 1s".to_owned()),
        Some(s) if s <= MAX_TIMEOUT_SECONDS => Ok(s),
        _ => Err(format!("timeout must be at most 7d (got {text:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid preset whose `variables:` block is `vars` (indented entries) and whose steps follow.
    fn doc(vars: &str, steps: &str) -> String {
        format!(
            "name: demo\nversion: 1.0.0\ndescription: A demo\nrisk: low\nvariables:\n{vars}steps:\n{steps}"
        )
    }

    const STEP: &str = "  - name: Say hi\n    run: echo hi\n";

    fn error(source: &str) -> LoadError {
        parse(source, "demo.yaml").expect_err("the preset should be refused")
    }

    #[track_caller]
    fn assert_error(source: &str, line: Option<usize>, needle: &str) {
        let e = error(source);
        assert_eq!(e.file, "demo.yaml");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(needle), "{e:?} lacks {needle:?}");
    }

    #[test]
    fn a_minimal_preset_gets_the_default_timeout_and_empty_lists() {
        let p = parse(&doc("", STEP), "demo.yaml").unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.timeout, "1h");
        assert_eq!(p.timeout_seconds, 3600);
        assert_eq!(p.timeout(), std::time::Duration::from_secs(3600));
        assert!(p.tags.is_empty() && p.fixes.is_empty() && p.variables.is_empty());
        assert_eq!(p.risk, Risk::Low);
        assert_eq!(p.origin, "demo.yaml");
    }

    #[test]
    fn variables_keep_their_file_order_and_defaults_are_normalized() {
        let vars = "  zeta: { type: string }\n  alpha: { type: integer, default: \"22\" }\n  mid: { type: list, default: a }\n";
        let p = parse(&doc(vars, STEP), "demo.yaml").unwrap();
        let names: Vec<&str> = p.variables.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(p.variables[1].default, Some(serde_json::json!(22)));
        assert_eq!(p.variables[2].default, Some(serde_json::json!(["a"])));
    }

    #[test]
    fn a_misspelled_top_level_key_is_an_error_naming_it_and_its_line() {
        let source =
            "name: demo\nversion: 1.0.0\ndescription: d\nrisk: low\nstpes:\n  - name: a\n    run: b\n";
        let e = error(source);
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("unknown field `stpes`"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
        assert!(
            e.to_string().starts_with("demo.yaml:5: unknown field `stpes`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_variables_and_steps_are_errors_too() {
        assert_error(
            &doc("  a: { type: string, defualt: x }\n", STEP),
            Some(6),
            "defualt",
        );
        assert_error(&doc("", "  - name: a\n    rnu: b\n"), Some(8), "rnu");
    }

    #[test]
    fn a_missing_field_and_broken_yaml_are_reported_with_a_line() {
        assert_error("name: demo\nversion: 1.0.0\n", Some(2), "missing field");
        assert_error("name: [demo\n", Some(1), "");
        assert_error(
            &doc("  a: { type: string }\n  a: { type: string }\n", STEP),
            Some(7),
            "duplicate",
        );
    }

    #[test]
    fn the_name_must_be_lowercase_words() {
        assert_error(
            &doc("", STEP).replace("name: demo", "name: Demo_1"),
            Some(1),
            "name must be 1 to 64 characters of a-z, 0-9 and '-'",
        );
    }

    #[test]
    fn the_version_must_be_semver() {
        for bad in ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+"] {
            assert_error(&doc("", STEP).replace("1.0.0", bad), Some(2), "semantic version");
        }
        for good in ["0.0.0", "1.2.3-rc.1", "1.2.3+build.5", "1.2.3-alpha-1+001"] {
            assert!(
                parse(&doc("", STEP).replace("1.0.0", good), "x").is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn the_risk_must_be_low_medium_or_high() {
        assert_error(
            &doc("", STEP).replace("risk: low", "risk: extreme"),
            Some(4),
            "risk must be low, medium or high",
        );
    }

    #[test]
    fn the_timeout_is_a_number_with_a_unit_up_to_seven_days() {
        let with = |t: &str| doc("", STEP).replace("risk: low\n", &format!("risk: low\ntimeout: {t}\n"));
        assert_error(&with("15"), Some(5), "whole number followed by s, m, h or d");
        assert_error(&with("1w"), Some(5), "whole number followed by s, m, h or d");
        assert_error(&with("8d"), Some(5), "at most 7d");
        assert_error(&with("0s"), Some(5), "at least 1s");
        let p = parse(&with("15m"), "x").unwrap();
        assert_eq!((p.timeout.as_str(), p.timeout_seconds), ("15m", 900));
        assert_eq!(
            parse(&with("7d"), "x").unwrap().timeout_seconds,
            MAX_TIMEOUT_SECONDS
        );
    }

    #[test]
    fn a_variable_name_must_be_a_lowercase_bash_name() {
        assert_error(
            &doc("  Hostname: { type: string }\n", STEP),
            Some(6),
            "must match ^[a-z_][a-z0-9_]{0,63}$",
        );
        assert_error(&doc("  9lives: { type: string }\n", STEP), Some(6), "9lives");
        assert_error(&doc("  _: { type: string }\n", STEP), Some(6), "bash reserves");
        let long = "a".repeat(65);
        assert_error(
            &doc(&format!("  {long}: {{ type: string }}\n"), STEP),
            Some(6),
            &long,
        );
    }

    #[test]
    fn an_unknown_variable_type_is_refused() {
        assert_error(
            &doc("  a: { type: int }\n", STEP),
            Some(6),
            "variable a: type must be string, integer, boolean, list or enum",
        );
    }

    #[test]
    fn a_default_must_obey_the_variable_rules() {
        let cases = [
            (
                "  p: { type: integer, default: abc }\n",
                "variable p: default: p must be an integer",
            ),
            (
                "  p: { type: integer, default: 70000, max: 65535 }\n",
                "p must be <= 65535",
            ),
            ("  p: { type: integer, default: 0, min: 1 }\n", "p must be >= 1"),
            (
                "  p: { type: boolean, default: maybe }\n",
                "p must be true or false",
            ),
            (
                "  p: { type: string, default: \"A\", pattern: \"^[a-z]+$\" }\n",
                "p must match the pattern ^[a-z]+$",
            ),
            (
                "  p: { type: enum, values: [a, b], default: c }\n",
                "p must be one of a, b",
            ),
            (
                "  p: { type: string, default: \"a\\0b\" }\n",
                "p must not contain a NUL byte",
            ),
        ];
        for (vars, needle) in cases {
            assert_error(&doc(vars, STEP), Some(6), needle);
        }
    }

    #[test]
    fn rules_that_contradict_the_type_or_each_other_are_refused() {
        let cases = [
            (
                "  p: { type: integer, min: 5, max: 1 }\n",
                "variable p: min (5) is greater than max (1)",
            ),
            (
                "  p: { type: string, pattern: \"(\" }\n",
                "variable p: pattern is not a valid regex",
            ),
            (
                "  p: { type: integer, pattern: \"^1$\" }\n",
                "pattern applies only to string and list variables",
            ),
            (
                "  p: { type: boolean, min: 1 }\n",
                "min and max apply to integer, string and list variables",
            ),
            ("  p: { type: string, min: -1 }\n", "cannot be negative"),
            ("  p: { type: enum }\n", "variable p: an enum needs values"),
            ("  p: { type: enum, values: [] }\n", "values must not be empty"),
            (
                "  p: { type: string, values: [a] }\n",
                "values apply only to enum variables",
            ),
            (
                "  p: { type: string, required: true, default: a }\n",
                "a required variable cannot have a default",
            ),
        ];
        for (vars, needle) in cases {
            assert_error(&doc(vars, STEP), Some(6), needle);
        }
    }

    #[test]
    fn steps_must_exist_and_have_a_name_and_a_body() {
        assert_error(&doc("", "  []\n"), Some(7), "steps must not be empty");
        assert_error(
            &doc("", "  - name: \"\"\n    run: x\n"),
            Some(7),
            "step name must not be empty",
        );
        assert_error(
            &doc("", "  - name: a\n    run: \"  \"\n"),
            Some(8),
            "step \"a\": run must not be empty",
        );
    }

    #[test]
    fn duplicate_step_names_are_allowed() {
        assert!(parse(&doc("", &format!("{STEP}{STEP}")), "x").is_ok());
    }

    #[test]
    fn a_step_if_must_name_a_declared_boolean() {
        let step = |cond: &str| format!("  - name: Guarded\n    if: {cond}\n    run: echo\n");
        let vars = "  flag: { type: boolean }\n  port: { type: integer }\n";
        assert_error(
            &doc(vars, &step("nope")),
            Some(10),
            "if names \"nope\", which is not a declared variable",
        );
        assert_error(
            &doc(vars, &step("port")),
            Some(10),
            "which is a integer, not a boolean",
        );
        assert_error(
            &doc(vars, &step("\"!nope\"")),
            Some(10),
            "not a declared variable",
        );
        let p = parse(&doc(vars, &step("\"!flag\"")), "x").unwrap();
        assert_eq!(p.steps[0].condition.as_deref(), Some("!flag"));
    }

    #[test]
    fn tags_targets_and_fixes_share_a_lowercase_alphabet() {
        let with = |line: &str| doc("", STEP).replace("risk: low\n", &format!("risk: low\n{line}\n"));
        assert_error(
            &with("tags: [Web Server]"),
            Some(5),
            "tags entries must be lowercase words",
        );
        assert_error(&with("fixes: [\"tls expiring\"]"), Some(5), "fixes entries");
        assert!(parse(&with("fixes: [tls.expiring, postgres.no-backup]"), "x").is_ok());
    }

    #[test]
    fn load_errors_display_the_file_then_the_line() {
        let with_line = LoadError::new("a.yaml", Some(3), "boom");
        assert_eq!(with_line.to_string(), "a.yaml:3: boom");
        let without = LoadError::new("a.yaml", None, "boom");
        assert_eq!(without.to_string(), "a.yaml: boom");
    }
}

//! Turning an input value (JSON from the API, or a string from `--var k=v`) into the normalized
//! value of a variable, checking every rule. Load-time defaults go through the same code, so a
//! default can never be something a caller could not have sent.

use serde_json::Value;

use crate::{RenderError, VarType, Variable};

impl Variable {
    /// Checks `input` against this variable's type and rules and returns it normalized: a JSON
    /// string, integer, boolean, or array of strings. `null` is not accepted here; the caller
    /// treats it as "not given".
    pub fn resolve(&self, input: &Value) -> Result<Value, RenderError> {
        let name = self.name.as_str();
        let err = |message: String| RenderError::new(name, message);
        reject_nul(name, input)?;
        match self.kind {
            VarType::String => {
                let Value::String(text) = input else {
                    return Err(err(format!("{name} must be a string")));
                };
                let chars = i64::try_from(text.chars().count()).unwrap_or(i64::MAX);
                if let Some(min) = self.min.filter(|min| chars < *min) {
                    return Err(err(format!("{name} must be at least {min} characters")));
                }
                if let Some(max) = self.max.filter(|max| chars > *max) {
                    return Err(err(format!("{name} must be at most {max} characters")));
                }
                // The value is not echoed: it may be a password.
                if let Some(re) = self.regex.as_ref().filter(|re| !re.is_match(text)) {
                    return Err(err(format!("{name} must match the pattern {}", re.as_str())));
                }
                Ok(input.clone())
            }
            VarType::Integer => {
                let number = match input {
                    Value::Number(n) => n.as_i64(),
                    // `--var ssh_port=2222` arrives as a string.
                    Value::String(s) => s.parse::<i64>().ok(),
                    _ => None,
                };
                let Some(number) = number else {
                    return Err(err(format!("{name} must be an integer")));
                };
                if let Some(min) = self.min.filter(|min| number < *min) {
                    return Err(err(format!("{name} must be >= {min}")));
                }
                if let Some(max) = self.max.filter(|max| number > *max) {
                    return Err(err(format!("{name} must be <= {max}")));
                }
                Ok(Value::from(number))
            }
            VarType::Boolean => match input {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) if s == "true" => Ok(Value::Bool(true)),
                Value::String(s) if s == "false" => Ok(Value::Bool(false)),
                _ => Err(err(format!("{name} must be true or false"))),
            },
            VarType::List => {
                let items: Vec<String> = match input {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| {
                            scalar_text(item).ok_or_else(|| {
                                err(format!("{name} must be a list of strings, numbers or booleans"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    // `--var extra_packages=curl,htop`: comma-separated, items trimmed, empty
                    // items dropped (so an empty string is an empty list). An item with a comma
                    // needs the JSON array form.
                    Value::String(s) => s
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    _ => return Err(err(format!("{name} must be a list"))),
                };
                let count = i64::try_from(items.len()).unwrap_or(i64::MAX);
                if let Some(min) = self.min.filter(|min| count < *min) {
                    return Err(err(format!("{name} must have at least {min} items")));
                }
                if let Some(max) = self.max.filter(|max| count > *max) {
                    return Err(err(format!("{name} must have at most {max} items")));
                }
                if let Some(re) = &self.regex
                    && let Some(i) = items.iter().position(|item| !re.is_match(item))
                {
                    return Err(err(format!(
                        "{name} items must match the pattern {} (item {} does not)",
                        re.as_str(),
                        i + 1
                    )));
                }
                Ok(Value::Array(items.into_iter().map(Value::String).collect()))
            }
            VarType::Enum => {
                let text = scalar_text(input);
                match text {
                    Some(text) if self.values.contains(&text) => Ok(Value::String(text)),
                    _ => Err(err(format!("{name} must be one of {}", self.values.join(", ")))),
                }
            }
        }
    }

    /// The value of an optional variable that was not given and has no default. Every variable
    /// is assigned in the script so `set -u` never trips: strings and lists are empty, booleans
    /// false, and integers and enums `null` (rendered as the empty string: "not set").
    pub fn unset_value(&self) -> Value {
        match self.kind {
            VarType::String => Value::String(String::new()),
            VarType::List => Value::Array(Vec::new()),
            VarType::Boolean => Value::Bool(false),
            VarType::Integer | VarType::Enum => Value::Null,
        }
    }
}

/// The text of a JSON scalar as a list item or enum value: strings as they are, numbers and
/// booleans as JSON writes them.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Bash cannot hold a NUL byte in a variable: it would silently cut the value, so refuse it.
fn reject_nul(name: &str, value: &Value) -> Result<(), RenderError> {
    let has_nul = match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items
            .iter()
            .any(|item| matches!(item, Value::String(s) if s.contains('\0'))),
        _ => false,
    };
    if has_nul {
        return Err(RenderError::new(
            name,
            format!("{name} must not contain a NUL byte"),
        ));
    }
    Ok(())
}

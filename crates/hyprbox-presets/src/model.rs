//! The validated preset model: what [`crate::parse`] returns and what the API serializes.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// How much a preset can break. Shown to the operator before running; serialized lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Risk> {
        match text {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            _ => None,
        }
    }
}

/// The type of a variable, which decides what input it accepts and how it lands in bash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// Any text without NUL; `min`/`max` bound its length in characters, `pattern` the whole value.
    String,
    /// An `i64`; `min`/`max` bound the value.
    Integer,
    /// `true` or `false`; rendered as the bash words `true`/`false` so steps test `== true`.
    Boolean,
    /// A bash array of strings; `min`/`max` bound the item count, `pattern` every item.
    List,
    /// One of `values`.
    Enum,
}

impl VarType {
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Integer => "integer",
            VarType::Boolean => "boolean",
            VarType::List => "list",
            VarType::Enum => "enum",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<VarType> {
        match text {
            "string" => Some(VarType::String),
            "integer" => Some(VarType::Integer),
            "boolean" => Some(VarType::Boolean),
            "list" => Some(VarType::List),
            "enum" => Some(VarType::Enum),
            _ => None,
        }
    }
}

/// One declared variable. Field order follows the YAML; `type` is the serialized key of `kind`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: VarType,
    pub required: bool,
    /// Already normalized to the variable's type (an integer default written `"22"` is `22`).
    pub default: Option<Value>,
    pub description: Option<String>,
    /// A secret is rendered like any value but masked by [`Preset::redact`], for logs and audit.
    pub secret: bool,
    /// Matched with `regex` as written: anchor it (`^…$`) to constrain the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// The allowed values of an `enum`; empty for the other types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// `pattern`, compiled once at load time.
    #[serde(skip)]
    pub(crate) regex: Option<regex::Regex>,
}

/// One step of the procedure. `run` is author code, pasted into the script as written.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub run: String,
    /// A boolean variable guarding the step (`enable_ufw`), or its negation (`!dry_run`).
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A validated preset. Built by [`crate::parse`]; fields are public for reading and serializing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preset {
    pub name: String,
    pub version: String,
    pub description: String,
    pub tags: Vec<String>,
    pub targets: Vec<String>,
    pub risk: Risk,
    /// As written in the file (`15m`); `1h` when the file has none.
    pub timeout: String,
    pub timeout_seconds: u64,
    /// Finding types this preset remedies (`tls.expiring`), for recommendations.
    pub fixes: Vec<String>,
    /// In file order, which is also the order of the assignments in the script.
    pub variables: Vec<Variable>,
    pub steps: Vec<Step>,
    /// Where the preset came from (`builtin/server-light.yaml` or a path); never sent to clients,
    /// as it may reveal the server's file layout.
    #[serde(skip)]
    pub origin: String,
}

impl Preset {
    /// The job timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// The list shape of `GET /api/presets`: `{name, version, description, tags, targets, risk,
    /// stepCount, variables: [{name, type, required, default, description}]}`.
    pub fn summary(&self) -> Value {
        let variables: Vec<Value> = self
            .variables
            .iter()
            .map(|v| {
                json!({
                    "name": v.name,
                    "type": v.kind,
                    "required": v.required,
                    "default": v.default,
                    "description": v.description,
                })
            })
            .collect();
        json!({
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": self.tags,
            "targets": self.targets,
            "risk": self.risk,
            "stepCount": self.steps.len(),
            "variables": variables,
        })
    }

    /// A copy of `values` with every `secret` variable's value replaced by `"********"`, for
    /// anything that is logged or audited. (The script itself must hold the real value.)
    pub fn redact(&self, values: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
        values
            .iter()
            .map(|(name, value)| {
                let secret = self.variable(name).is_some_and(|v| v.secret);
                // An unset secret (null or empty) stays visibly unset.
                let unset = value.is_null() || value.as_str() == Some("");
                let shown = if secret && !unset {
                    Value::String("********".into())
                } else {
                    value.clone()
                };
                (name.clone(), shown)
            })
            .collect()
    }
}

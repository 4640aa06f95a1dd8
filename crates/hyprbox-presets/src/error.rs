//! The two error types: one for preset files (found at load time, by authors), one for variable
//! values (found at render time, by whoever asked for the script).

/// A preset file that cannot be used. Displays as `<file>:<line>: <problem>`, or `<file>: <problem>`
/// when no line is known, so an operator can jump straight to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    /// The origin given to [`crate::parse`]: a path for files on disk, `builtin/<file>` for ours.
    pub file: String,
    /// 1-based line of the offending key or value, when the parser or a span could tell.
    pub line: Option<usize>,
    pub message: String,
}

impl LoadError {
    pub(crate) fn new(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// A variable value the preset refuses. `message` always names the variable and the rule
/// (`ssh_port must be <= 65535`), so it can be returned to the client as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    pub variable: String,
    pub message: String,
}

impl RenderError {
    pub(crate) fn new(variable: &str, message: impl Into<String>) -> Self {
        RenderError {
            variable: variable.to_owned(),
            message: message.into(),
        }
    }
}

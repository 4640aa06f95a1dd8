//! Presets: parameterised bash procedures described in YAML, their validation and their safe
//! rendering into scripts, plus the built-in presets (`presets/*.yaml`, compiled in).
//!
//! A preset file is parsed with serde-saphyr and checked rule by rule ([`parse`]); errors name the
//! file and, where the parser or a span knows it, the line. [`Preset::render`] resolves the
//! caller's variables (defaults, types, patterns, ranges) and writes a script in which every value
//! is a single-quoted bash word ([`shell_quote`]): safe by construction, and deterministic.
//!
//! Pure data and text: no HTTP, no database, no async; the only I/O is reading a directory of
//! preset files ([`Catalog::load`], [`check_dir`]). Depends on nothing else in the workspace.

mod catalog;
mod error;
mod model;
mod parse;
mod render;
mod values;

pub use catalog::{BUILTIN, Catalog, check_dir};
pub use error::{LoadError, RenderError};
pub use model::{Preset, Risk, Step, VarType, Variable};
pub use parse::{DEFAULT_TIMEOUT, MAX_TIMEOUT_SECONDS, parse};
pub use render::{Rendered, shell_quote};

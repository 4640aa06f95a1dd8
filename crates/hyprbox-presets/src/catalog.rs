//! The set of presets a server offers: ours, compiled in, then an operator's directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::{LoadError, Preset, parse};

/// The built-in presets, as `(origin, source)`. Compiled in so a server needs no files to offer
/// them; the tests prove every one parses, renders, passes `bash -n` and shellcheck.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin/disk-cleanup.yaml",
        include_str!("../presets/disk-cleanup.yaml"),
    ),
    (
        "builtin/hypervault-restic.yaml",
        include_str!("../presets/hypervault-restic.yaml"),
    ),
    (
        "builtin/postgres-backup.yaml",
        include_str!("../presets/postgres-backup.yaml"),
    ),
    (
        "builtin/server-light.yaml",
        include_str!("../presets/server-light.yaml"),
    ),
    (
        "builtin/tls-renew.yaml",
        include_str!("../presets/tls-renew.yaml"),
    ),
];

/// Presets by name, sorted by name. Cheap to clone: presets are shared behind [`Arc`].
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    presets: BTreeMap<String, Arc<Preset>>,
}

impl Catalog {
    /// The built-ins, then every `*.yaml` / `*.yml` file in `dir` (when given), a file replacing
    /// the built-in of the same `name`. The first problem found stops the load: a server must not
    /// start with a preset silently missing. Use [`check_dir`] to see every problem at once.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, LoadError> {
        let mut catalog = Catalog::builtin();
        if let Some(dir) = dir {
            let presets = check_dir(dir).map_err(|mut errors| errors.swap_remove(0))?;
            for preset in presets {
                catalog.insert(preset);
            }
        }
        Ok(catalog)
    }

    /// The built-in presets only.
    pub fn builtin() -> Catalog {
        let mut catalog = Catalog::default();
        for (origin, source) in BUILTIN {
            // Proven valid by the tests of this crate, so a failure here is a build mistake.
            let preset = parse(source, origin).expect("built-in presets are valid");
            catalog.insert(preset);
        }
        catalog
    }

    /// Adds `preset`, returning the one of the same name it replaces.
    pub fn insert(&mut self, preset: Preset) -> Option<Arc<Preset>> {
        self.presets.insert(preset.name.clone(), Arc::new(preset))
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.presets.get(name).map(Arc::as_ref)
    }

    /// The preset as a shared handle, for holding past the catalog's borrow (e.g. in a job).
    pub fn get_shared(&self, name: &str) -> Option<Arc<Preset>> {
        self.presets.get(name).cloned()
    }

    /// Every preset, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Preset> {
        self.presets.values().map(Arc::as_ref)
    }

    /// Presets that remedy the finding type `finding_type` (`tls.expiring`), sorted by name.
    pub fn fixing<'a>(&'a self, finding_type: &'a str) -> impl Iterator<Item = &'a Preset> {
        self.iter()
            .filter(move |p| p.fixes.iter().any(|f| f == finding_type))
    }

    pub fn len(&self) -> usize {
        self.presets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.presets.is_empty()
    }
}

/// Validates every `*.yaml` / `*.yml` file directly in `dir` (for `hyprbox presets check <dir>`),
/// in file-name order, and reports every problem rather than the first: unreadable files, invalid
/// presets and two files declaring the same name.
pub fn check_dir(dir: &Path) -> Result<Vec<Preset>, Vec<LoadError>> {
    let shown = dir.display().to_string();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Err(vec![LoadError::new(
                &shown,
                None,
                format!("cannot read the directory: {e}"),
            )]);
        }
    };
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let is_yaml = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml");
                if is_yaml && path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => errors.push(LoadError::new(
                &shown,
                None,
                format!("cannot list the directory: {e}"),
            )),
        }
    }
    // Directory order is the file system's whim; sort so results and messages are stable.
    paths.sort();

    let mut presets: Vec<Preset> = Vec::with_capacity(paths.len());
    for path in paths {
        let origin = path.display().to_string();
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) => {
                errors.push(LoadError::new(
                    &origin,
                    None,
                    format!("cannot read the file: {e}"),
                ));
                continue;
            }
        };
        match parse(&source, &origin) {
            Ok(preset) => {
                if let Some(first) = presets.iter().find(|p| p.name == preset.name) {
                    errors.push(LoadError::new(
                        &origin,
                        None,
                        format!(
                            "preset name {:?} is already used by {}",
                            preset.name, first.origin
                        ),
                    ));
                } else {
                    presets.push(preset);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(presets)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("hyprbox-presets-unit-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, file: &str, text: &str) {
            std::fs::write(self.0.join(file), text).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn preset(name: &str, description: &str) -> String {
        format!(
            "name: {name}\nversion: 2.0.0\ndescription: {description}\nrisk: high\nsteps:\n  - name: s\n    run: echo\n"
        )
    }

    #[test]
    fn a_file_in_the_directory_overrides_the_builtin_of_the_same_name() {
        let dir = TempDir::new("override");
        dir.write("mine.yaml", &preset("tls-renew", "Our own renewal"));
        dir.write("extra.yml", &preset("extra", "Something else"));
        dir.write("notes.txt", "not a preset");
        let catalog = Catalog::load(Some(&dir.0)).unwrap();
        assert_eq!(catalog.len(), BUILTIN.len() + 1);
        let tls = catalog.get("tls-renew").unwrap();
        assert_eq!(tls.description, "Our own renewal");
        assert_eq!(tls.version, "2.0.0");
        assert!(tls.origin.ends_with("mine.yaml"));
        assert!(catalog.get("extra").is_some());
        assert!(catalog.get_shared("server-light").is_some());
        let names: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn an_invalid_file_in_the_directory_fails_the_load_naming_the_file() {
        let dir = TempDir::new("invalid");
        dir.write("good.yaml", &preset("good", "Fine"));
        dir.write("bad.yaml", "name: bad\nversion: 1\n");
        let e = Catalog::load(Some(&dir.0)).unwrap_err();
        assert!(e.file.ends_with("bad.yaml"), "{e}");
        assert!(e.to_string().contains("bad.yaml:"), "{e}");
        assert!(e.message.contains("missing field"), "{e}");
    }

    #[test]
    fn check_dir_reports_every_problem_at_once() {
        let dir = TempDir::new("check");
        dir.write("a.yaml", &preset("same", "First"));
        dir.write("b.yaml", &preset("same", "Second"));
        dir.write("c.yaml", "name: c\n  broken: [\n");
        dir.write("d.yaml", &preset("Bad_Name", "x"));
        let errors = check_dir(&dir.0).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{shown:#?}");
        assert!(
            shown[0].contains("b.yaml") && shown[0].contains("already used by"),
            "{shown:#?}"
        );
        assert!(shown[1].contains("c.yaml:"), "{shown:#?}");
        assert!(shown[2].contains("d.yaml:1: name must be"), "{shown:#?}");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join("hyprbox-presets-does-not-exist");
        let e = Catalog::load(Some(&missing)).unwrap_err();
        assert!(
            e.to_string()
                .contains("hyprbox-presets-does-not-exist: cannot read the directory"),
            "{e}"
        );
    }

    #[test]
    fn without_a_directory_the_catalog_is_the_builtins() {
        let catalog = Catalog::load(None).unwrap();
        assert_eq!(catalog.len(), BUILTIN.len());
        assert!(!catalog.is_empty());
        assert_eq!(catalog.fixing("tls.expiring").next().unwrap().name, "tls-renew");
        assert!(catalog.get("nope").is_none());
    }
}

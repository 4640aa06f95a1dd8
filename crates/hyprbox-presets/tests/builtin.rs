//! The built-in presets: each one parses, renders to the committed snapshot, is valid bash and
//! passes shellcheck; the dry runs change nothing.

mod common;

use std::process::Command;

use common::{TempDir, run_with_stdin, vars};
use hyprbox_presets::{BUILTIN, Catalog, Preset, Rendered};
use serde_json::{Map, Value, json};

/// Fixed values that make every built-in render every branch it has.
fn sample_values(preset: &Preset) -> Map<String, Value> {
    match preset.name.as_str() {
        "server-light" => vars(&[
            ("hostname", json!("web-1")),
            ("timezone", json!("Europe/Paris")),
            ("ssh_port", json!("2222")),
            ("ufw_allow", json!(["80/tcp", "443/tcp"])),
            ("extra_packages", json!("curl, htop")),
        ]),
        "hypervault-restic" => vars(&[
            ("repository", json!("sftp:backup@vault.example:/srv/restic/web-1")),
            ("paths", json!(["/etc", "/var/www/it's here"])),
            ("excludes", json!(["*.tmp", "/var/www/cache"])),
            ("tag", json!("policy-42")),
        ]),
        "tls-renew" => vars(&[("domain", json!("example.com"))]),
        "disk-cleanup" => vars(&[("log_max_age_days", json!(30))]),
        "postgres-backup" => vars(&[("container", json!("db")), ("database", json!("app"))]),
        other => panic!("no sample values for the built-in {other}: add some"),
    }
}

fn render_sample(preset: &Preset) -> Rendered {
    preset
        .render(&sample_values(preset))
        .unwrap_or_else(|e| panic!("{}: {e}", preset.name))
}

#[test]
fn every_builtin_parses_and_the_catalog_holds_them_all() {
    let catalog = Catalog::builtin();
    assert_eq!(catalog.len(), BUILTIN.len());
    let names: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "disk-cleanup",
            "hypervault-restic",
            "postgres-backup",
            "server-light",
            "tls-renew"
        ]
    );
    for preset in catalog.iter() {
        assert_eq!(preset.version, "1.0.0");
        assert_eq!(preset.targets, ["debian", "ubuntu"]);
        assert!(!preset.fixes.is_empty(), "{} fixes nothing", preset.name);
        for variable in &preset.variables {
            assert!(
                variable.description.is_some(),
                "{}: {} has no description",
                preset.name,
                variable.name
            );
        }
    }
}

#[test]
fn finding_types_the_agent_raises_have_a_preset() {
    let catalog = Catalog::builtin();
    for finding in ["tls.expiring", "disk.full", "postgres.no-backup"] {
        assert!(
            catalog.fixing(finding).next().is_some(),
            "no preset fixes {finding}"
        );
    }
}

#[test]
fn every_builtin_renders_to_its_snapshot() {
    for preset in Catalog::builtin().iter() {
        let rendered = render_sample(preset);
        assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
        insta::assert_snapshot!(preset.name.clone(), rendered.script);
    }
}

#[test]
fn every_builtin_rendering_is_valid_bash() {
    for preset in Catalog::builtin().iter() {
        for values in [sample_values(preset), defaults_only(preset)] {
            let Ok(rendered) = preset.render(&values) else {
                continue;
            };
            let out = run_with_stdin("bash", &["-n"], &rendered.script).expect("run bash -n");
            assert!(
                out.status.success(),
                "{}: bash -n failed:\n{}",
                preset.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Only the required variables, with plausible values: the defaults path of each preset.
fn defaults_only(preset: &Preset) -> Map<String, Value> {
    preset
        .variables
        .iter()
        .filter(|v| v.required)
        .map(|v| {
            let value = match v.name.as_str() {
                "paths" => json!(["/etc"]),
                "repository" => json!("/srv/restic"),
                _ => json!("x"),
            };
            (v.name.clone(), value)
        })
        .collect()
}

#[test]
fn every_builtin_rendering_passes_shellcheck() {
    let available = Command::new("shellcheck").arg("--version").output().is_ok();
    if !available {
        assert!(
            std::env::var_os("HYPRBOX_REQUIRE_SHELLCHECK").is_none_or(|v| v != "1"),
            "shellcheck is required (HYPRBOX_REQUIRE_SHELLCHECK=1) but not installed"
        );
        eprintln!("note: shellcheck is not installed; skipping the shellcheck test");
        return;
    }
    let mut failures = Vec::new();
    for preset in Catalog::builtin().iter() {
        for values in [sample_values(preset), defaults_only(preset)] {
            let rendered = preset.render(&values).expect("render");
            let out =
                run_with_stdin("shellcheck", &["-s", "bash", "-"], &rendered.script).expect("run shellcheck");
            if !out.status.success() {
                failures.push(format!(
                    "{}:\n{}",
                    preset.name,
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A directory of stand-ins for every command that could change the machine, placed first on
/// PATH: each records its name and succeeds. A dry run must leave the record empty.
fn recording_stubs(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.0.join("calls.log");
    for command in [
        "hostnamectl",
        "timedatectl",
        "apt-get",
        "apt",
        "dpkg",
        "ufw",
        "sshd",
        "systemctl",
        "sed",
        "tee",
        "mv",
        "rm",
        "chmod",
        "install",
        "journalctl",
        "certbot",
        "nginx",
        "apache2ctl",
        "runuser",
        "docker",
        "restic",
    ] {
        let path = bin.join(command);
        let body = format!(
            "#!/bin/sh\nprintf '%s\\n' \"{command} $*\" >> '{}'\n",
            log.display()
        );
        // `timedatectl show` and `journalctl --disk-usage` only read: let them answer.
        let body = match command {
            "timedatectl" => format!("{body}[ \"$1\" = show ] && echo Etc/Nowhere\nexit 0\n"),
            _ => body,
        };
        std::fs::write(&path, body).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&path).unwrap().permissions(),
            0o755,
        );
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    (bin, log)
}

fn run_dry(name: &str, extra: &[(&str, Value)]) -> (String, String) {
    let catalog = Catalog::builtin();
    let preset = catalog.get(name).unwrap();
    let mut values = sample_values(preset);
    values.extend(vars(extra));
    values.insert("dry_run".into(), json!(true));
    let script = preset.render(&values).unwrap().script;
    let dir = TempDir::new(name);
    let (bin, log) = recording_stubs(&dir);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .current_dir(&dir.0)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} dry run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    (stdout, calls)
}

#[test]
fn server_light_dry_run_changes_nothing_and_says_what_it_would_do() {
    let (stdout, calls) = run_dry("server-light", &[]);
    // timedatectl is only asked for the current zone.
    assert_eq!(calls.trim(), "timedatectl show --property=Timezone --value");
    assert!(
        stdout.contains("dry-run: would run: hostnamectl set-hostname web-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dry-run: would run: ufw allow 2222/tcp"),
        "{stdout}"
    );
    assert!(stdout.contains("PasswordAuthentication no"), "{stdout}");
    assert!(stdout.contains("all 7 steps done"), "{stdout}");
}

#[test]
fn disk_cleanup_dry_run_deletes_nothing() {
    let (stdout, calls) = run_dry("disk-cleanup", &[]);
    assert_eq!(calls.trim(), "journalctl --disk-usage");
    assert!(
        stdout.contains("would run journalctl --vacuum-size=200M"),
        "{stdout}"
    );
    assert!(stdout.contains("all 6 steps done"), "{stdout}");
}

#[test]
fn hypervault_restic_backs_up_to_a_local_repository_for_real() {
    if Command::new("restic").arg("version").output().is_err() {
        assert!(
            std::env::var_os("HYPRBOX_REQUIRE_RESTIC").is_none_or(|v| v != "1"),
            "restic is required (HYPRBOX_REQUIRE_RESTIC=1) but not installed"
        );
        eprintln!("note: restic is not installed; skipping the real backup test");
        return;
    }
    let dir = TempDir::new("restic");
    let data = dir.0.join("data");
    std::fs::create_dir_all(data.join("skip")).unwrap();
    std::fs::write(data.join("hello.txt"), "hello").unwrap();
    std::fs::write(data.join("skip/big.tmp"), "x").unwrap();
    let catalog = Catalog::builtin();
    let preset = catalog.get("hypervault-restic").unwrap();
    let values = vars(&[
        ("repository", json!(dir.0.join("repo").display().to_string())),
        ("password_ref", json!("env:TEST_RESTIC_SECRET")),
        ("paths", json!([data.display().to_string()])),
        ("excludes", json!(["*.tmp"])),
        ("tag", json!("policy-1")),
        ("keep_daily", json!(1)),
    ]);
    let script = preset.render(&values).unwrap().script;
    // Twice: the first run creates the repository, the second finds it and forgets one snapshot.
    for run in 1..=2 {
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            // What hyprbox-agent does with the password it read from password_ref.
            .env("RESTIC_PASSWORD", "correct horse battery staple")
            .env("RESTIC_CACHE_DIR", dir.0.join("cache"))
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("correct horse"), "the password was printed");
        let created = stdout.contains("repository: not found, creating it");
        assert_eq!(created, run == 1, "{stdout}");
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("a JSON line");
        let summary: Value = serde_json::from_str(last).expect("the last JSON line parses");
        assert_eq!(summary["type"], "hyprvault.summary");
        assert_eq!(summary["status"], "succeeded");
        assert_eq!(summary["restic"]["message_type"], "summary");
        assert_eq!(summary["restic"]["total_files_processed"], 1, "*.tmp is excluded");
        assert!(summary["restic"]["snapshot_id"].is_string());
    }
}

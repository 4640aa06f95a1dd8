//! The scanners: TLS certificates under the node config's `tls_paths` (`tls.expiring`) and every
//! real mounted filesystem (`disk.full`), every `scan_interval`. Each scan is one report that
//! fully covers both types (`complete`), so a renewed certificate or a cleaned disk clears itself.
//! A config change (pushed over the WebSocket, or pulled) starts a scan at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyprbox_proto::findings::{ReportBody, ReportedFinding};
use hyprbox_proto::nodes::{Inventory, NodeConfig};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::jobs::retry_delay;

pub const TLS: &str = "tls.expiring";
pub const DISK: &str = "disk.full";
/// How long the first scan waits for the node's config.
const FIRST_CONFIG_WAIT: Duration = Duration::from_secs(10);
/// Between scans when the node config does not say.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(300);
const DAY: i64 = 86_400;
/// Files read under one `tls_paths` directory at most (not recursive), and their size.
const MAX_DIR_FILES: usize = 500;
const MAX_CERT_FILE: u64 = 1 << 20;
/// The server takes at most 500 findings a report.
const MAX_FINDINGS: usize = 500;

/// File systems that hold no data of their own (kernel views, memory, images, overlays).
const VIRTUAL: [&str; 24] = [
    "tmpfs",
    "devtmpfs",
    "devpts",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "ramfs",
    "securityfs",
    "pstore",
    "bpf",
    "tracefs",
    "debugfs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
];

fn finding(
    kind: &str,
    key: String,
    severity: &str,
    title: String,
    message: String,
    metadata: serde_json::Value,
) -> ReportedFinding {
    ReportedFinding {
        kind: kind.into(),
        key,
        severity: severity.into(),
        title,
        message,
        related_entities: None,
        metadata: Some(metadata),
    }
}

/// The certificate files `tls_paths` names: a file as given, a directory's `.pem`/`.crt`/`.cer`
/// files (not recursive), sorted.
fn certificate_files(tls_paths: &[String]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in tls_paths {
        let path = Path::new(entry);
        if path.is_dir() {
            let Ok(read) = std::fs::read_dir(path) else {
                continue;
            };
            let mut found: Vec<PathBuf> = read
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "pem" | "crt" | "cer"))
                })
                .collect();
            found.sort();
            found.truncate(MAX_DIR_FILES);
            files.extend(found);
        } else {
            files.push(path.to_path_buf());
        }
    }
    files.sort();
    files.dedup();
    files
}

/// `tls.expiring` for each certificate under `tls_paths` that expires within 30 days (WARN) or 7
/// days or has expired (CRITICAL); key = the file's path. A file with several certificates (a
/// chain) counts by its first, the server's own.
pub fn tls_findings(tls_paths: &[String], now_unix: i64) -> Vec<ReportedFinding> {
    let mut found = Vec::new();
    for file in certificate_files(tls_paths) {
        let shown = file.display().to_string();
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > MAX_CERT_FILE) {
            tracing::warn!(path = %shown, "skipping a certificate file over 1 MiB");
            continue;
        }
        let data = match std::fs::read(&file) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "cannot read a certificate under tls_paths");
                continue;
            }
        };
        let Some(pem) = Pem::iter_from_buffer(&data)
            .filter_map(Result::ok)
            .find(|pem| pem.label == "CERTIFICATE")
        else {
            tracing::debug!(path = %shown, "no PEM certificate in the file");
            continue;
        };
        let Ok(cert) = pem.parse_x509() else {
            tracing::warn!(path = %shown, "cannot parse the certificate");
            continue;
        };
        let not_after = cert.validity().not_after.timestamp();
        let seconds_left = not_after - now_unix;
        let days_left = seconds_left.div_euclid(DAY);
        let severity = if seconds_left < 7 * DAY {
            "CRITICAL"
        } else if seconds_left < 30 * DAY {
            "WARN"
        } else {
            continue;
        };
        let mut domains: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if domains.is_empty() {
            domains = cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect();
        }
        let not_after_text = cert
            .validity()
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| not_after.to_string());
        let names = if domains.is_empty() {
            shown.clone()
        } else {
            domains.join(", ")
        };
        let (title, message) = if seconds_left <= 0 {
            (
                format!("TLS certificate for {names} has expired"),
                format!("The certificate in {shown} expired on {not_after_text}."),
            )
        } else {
            (
                format!("TLS certificate for {names} expires in {days_left} day(s)"),
                format!("The certificate in {shown} expires on {not_after_text}."),
            )
        };
        let metadata = json!({
            "path": shown,
            "subject": cert.subject().to_string(),
            "notAfter": chrono_rfc3339(not_after),
            "daysLeft": days_left,
            "domains": domains,
            // The tls-renew preset's variable, pre-filled by the server's recommendation.
            "domain": domains.first(),
        });
        found.push(finding(TLS, shown, severity, title, message, metadata));
    }
    found
}

/// A Unix time as RFC 3339 (UTC), without pulling a date library into the agent.
fn chrono_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One mounted file system of `/proc/self/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fs_type: String,
}

/// The real file systems of a mount table (`/proc/self/mounts` format): backed by a device or a
/// network share, not a kernel view, memory or an overlay; each mount point once.
pub fn real_mounts(table: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [source, target, fs_type, ..] = fields[..] else {
            continue;
        };
        let fs_type = fs_type.to_owned();
        if VIRTUAL.contains(&fs_type.as_str()) || fs_type.starts_with("fuse.") && fs_type != "fuse.sshfs" {
            continue;
        }
        let networked = matches!(fs_type.as_str(), "nfs" | "nfs4" | "cifs" | "smb3" | "fuse.sshfs");
        if !source.starts_with('/') && !networked && fs_type != "zfs" && fs_type != "btrfs" {
            continue;
        }
        // The table escapes spaces and tabs in paths as octal.
        let target = target.replace("\\040", " ").replace("\\011", "\t");
        if mounts.iter().any(|m| m.target == target) {
            continue;
        }
        mounts.push(Mount {
            source: source.to_owned(),
            target,
            fs_type,
        });
    }
    mounts
}

/// `disk.full` for each real file system at 90 % or more (WARN) or 95 % (CRITICAL), counted as
/// `df` does (used over what non-root users can have); key = the mount point. `usage` gives
/// (used, available) bytes of a mount point.
pub fn disk_findings(table: &str, usage: impl Fn(&str) -> Option<(u64, u64)>) -> Vec<ReportedFinding> {
    let mut found = Vec::new();
    for mount in real_mounts(table) {
        let Some((used, available)) = usage(&mount.target) else {
            continue;
        };
        let total = used + available;
        if total == 0 {
            continue;
        }
        let percent = used as f64 * 100.0 / total as f64;
        let severity = if percent >= 95.0 {
            "CRITICAL"
        } else if percent >= 90.0 {
            "WARN"
        } else {
            continue;
        };
        let rounded = percent.floor() as u64;
        let metadata = json!({
            "mount": mount.target,
            "device": mount.source,
            "fsType": mount.fs_type,
            "usedPercent": rounded,
            "usedBytes": used,
            "availableBytes": available,
        });
        found.push(finding(
            DISK,
            mount.target.clone(),
            severity,
            format!("Disk {} is {rounded} % full", mount.target),
            format!(
                "{} ({}) has {} MiB left of {} MiB.",
                mount.target,
                mount.source,
                available >> 20,
                total >> 20
            ),
            metadata,
        ));
    }
    found
}

/// (used, available to non-root) bytes of the file system at `path`.
fn statvfs_usage(path: &str) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stat.fragment_size();
    let used = (stat.blocks() - stat.blocks_free()).saturating_mul(fragment);
    Some((used, stat.blocks_available().saturating_mul(fragment)))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One scan of this node, as a report.
pub fn scan(node_id: &str, config: &NodeConfig, mount_table: &str) -> ReportBody {
    let tls_paths = config.tls_paths.clone().unwrap_or_default();
    let mut findings = tls_findings(&tls_paths, unix_now());
    findings.extend(disk_findings(mount_table, statvfs_usage));
    findings.truncate(MAX_FINDINGS);
    ReportBody {
        node_id: node_id.to_owned(),
        findings,
        complete: vec![TLS.into(), DISK.into()],
    }
}

/// Sends a scan's findings, then the Docker inventory when the node has an engine (its failure
/// to answer is logged: the findings are what matters).
async fn send(
    client: &Client,
    node_id: &str,
    report: &ReportBody,
    docker_socket: &Path,
) -> Result<(), crate::client::ApiError> {
    client.report_findings(report).await?;
    match crate::inventory::list(docker_socket).await {
        Ok(Some(containers)) => {
            let body = Inventory {
                node_id: node_id.to_owned(),
                containers,
            };
            client.report_inventory(&body).await?;
        }
        Ok(None) => {}
        Err(reason) => tracing::warn!(%reason, "cannot list the Docker containers"),
    }
    Ok(())
}

/// Scans every `scan_interval` (from the node config), at once when the config changes, and sends
/// each scan; a scan that cannot be sent is retried with backoff, then replaced by the next.
pub async fn run(
    client: Client,
    node_id: String,
    mut config: watch::Receiver<NodeConfig>,
    docker_socket: PathBuf,
    shutdown: CancellationToken,
) {
    // The first scan waits for the node's config (a pinned token gets it within a beat; a
    // fleet-wide token has none, and the disks are scanned anyway).
    tokio::select! {
        () = shutdown.cancelled() => return,
        _ = config.changed() => {}
        () = sleep(FIRST_CONFIG_WAIT) => {}
    }
    let mut backoff = Backoff::new();
    loop {
        let current = config.borrow_and_update().clone();
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let report = scan(&node_id, &current, &table);
        let wait = match send(&client, &node_id, &report, &docker_socket).await {
            Ok(()) => {
                backoff.succeed();
                tracing::debug!(findings = report.findings.len(), "scan reported");
                current
                    .scan_interval
                    .map_or(DEFAULT_SCAN_INTERVAL, Duration::from_secs)
                    .max(Duration::from_secs(10))
            }
            Err(e) => retry_delay(&mut backoff, &e, "reporting a scan"),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(wait) => {}
            changed = config.changed() => {
                if changed.is_err() {
                    // The config's sender is gone (the agent is stopping): keep the interval.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_file_systems_are_scanned_each_mount_point_once() {
        let table = "/dev/vda1 / ext4 rw,relatime 0 0\n\
                     proc /proc proc rw 0 0\n\
                     tmpfs /run tmpfs rw 0 0\n\
                     overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n\
                     /dev/vdb1 /srv/data\\040files xfs rw 0 0\n\
                     /dev/loop3 /snap/core/1 squashfs ro 0 0\n\
                     nas:/export /mnt/nas nfs4 rw 0 0\n\
                     tank/home /home zfs rw 0 0\n\
                     /dev/vda1 / ext4 rw 0 0\n";
        let targets: Vec<String> = real_mounts(table).into_iter().map(|m| m.target).collect();
        assert_eq!(targets, ["/", "/srv/data files", "/mnt/nas", "/home"]);
    }

    #[test]
    fn a_disk_is_warn_from_90_and_critical_from_95_percent() {
        let table = "/dev/a / ext4 rw 0 0\n/dev/b /var ext4 rw 0 0\n/dev/c /srv ext4 rw 0 0\n/dev/d /tmp2 ext4 rw 0 0\n";
        let usage = |path: &str| match path {
            "/" => Some((89, 11)),
            "/var" => Some((90, 10)),
            "/srv" => Some((95, 5)),
            _ => Some((0, 0)),
        };
        let found = disk_findings(table, usage);
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.key.as_str(), f.severity.as_str()))
            .collect();
        assert_eq!(got, [("/var", "WARN"), ("/srv", "CRITICAL")]);
        assert_eq!(
            found[0].metadata.as_ref().unwrap()["mount"],
            "/var",
            "disk-cleanup's variable"
        );
        assert!(found.iter().all(|f| f.kind == DISK));
    }

    /// A self-signed certificate for `domain` that expires `days` days after `now` (negative: ago).
    fn certificate(dir: &Path, domain: &str, now: i64, days: i64) -> PathBuf {
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 400 * DAY).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(now + days * DAY + 3600).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, domain);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{domain}.pem"));
        // A chain file: the server's certificate first, then its key (ignored).
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        path
    }

    #[test]
    fn certificates_are_warn_under_30_days_and_critical_under_7_or_expired() {
        let dir = std::env::temp_dir().join(format!("hyprbox-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("more")).unwrap();
        let now = unix_now();
        let expired = certificate(&dir, "expired.example.com", now, -3);
        certificate(&dir, "five.example.com", now, 5);
        certificate(&dir, "twenty.example.com", now, 20);
        certificate(&dir, "ninety.example.com", now, 90);
        let elsewhere = certificate(&dir.join("more"), "single.example.com", now, 10);
        std::fs::write(dir.join("notes.txt"), "not a certificate").unwrap();
        std::fs::write(
            dir.join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let paths = vec![
            dir.display().to_string(),
            elsewhere.display().to_string(),
            "/nonexistent/x.pem".into(),
        ];
        let found = tls_findings(&paths, now);
        let mut got: Vec<(String, &str)> = found
            .iter()
            .map(|f| {
                (
                    f.metadata.as_ref().unwrap()["domain"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    f.severity.as_str(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("expired.example.com".to_string(), "CRITICAL"),
                ("five.example.com".to_string(), "CRITICAL"),
                ("single.example.com".to_string(), "WARN"),
                ("twenty.example.com".to_string(), "WARN"),
            ]
        );
        let expired_finding = found
            .iter()
            .find(|f| f.key == expired.display().to_string())
            .unwrap();
        assert!(
            expired_finding.title.contains("has expired"),
            "{}",
            expired_finding.title
        );
        let meta = expired_finding.metadata.as_ref().unwrap();
        assert!(meta["daysLeft"].as_i64().unwrap() < 0);
        assert!(meta["subject"].as_str().unwrap().contains("expired.example.com"));
        assert!(meta["notAfter"].as_str().unwrap().ends_with('Z'));
        assert_eq!(meta["domains"], json!(["expired.example.com"]));
        assert!(found.iter().all(|f| f.kind == TLS));
    }

    #[test]
    fn dates_are_written_in_rfc_3339() {
        assert_eq!(chrono_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_rfc3339(1_796_601_600 + 3_723), "2026-12-07T01:02:03Z");
        assert_eq!(chrono_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

//! A findings report from the network: decoded and every finding checked without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = serde_json::from_slice::<hyprbox_proto::findings::ReportBody>(data) {
        let _ = hyprbox_proto::validate_node_id("nodeId", &report.node_id);
        for (index, finding) in report.findings.into_iter().enumerate() {
            let _ = hyprbox_server::findings::reported(index, finding);
        }
    }
});

//! Time to render a 10-step preset with five variables of every kind (the work of one
//! `POST /api/presets/:name/render` minus HTTP).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

fn ten_step_preset() -> hyprbox_presets::Preset {
    let mut source = String::from(
        "name: bench\nversion: 1.0.0\ndescription: Ten steps\nrisk: low\nvariables:\n  \
         hostname: { type: string, required: true, pattern: \"^[a-z0-9][a-z0-9.-]{0,62}$\" }\n  \
         ssh_port: { type: integer, default: 22, min: 1, max: 65535 }\n  \
         enable_ufw: { type: boolean, default: true }\n  \
         extra_packages: { type: list, default: [] }\n  \
         tz: { type: enum, values: [UTC, Europe/Paris], default: UTC }\nsteps:\n",
    );
    for i in 1..=10 {
        let guard = if i % 3 == 0 { "    if: enable_ufw\n" } else { "" };
        let _ = write!(
            source,
            "  - name: Step {i}\n{guard}    run: |\n      echo \"step {i} on $hostname:$ssh_port\"\n      \
             for p in \"${{extra_packages[@]}}\"; do echo \"$p\"; done\n"
        );
    }
    hyprbox_presets::parse(&source, "bench.yaml").expect("valid bench preset")
}

fn render(c: &mut Criterion) {
    let preset = ten_step_preset();
    let values: Map<String, Value> = [
        ("hostname", json!("web-1")),
        ("ssh_port", json!("2222")),
        ("extra_packages", json!(["curl", "htop", "it's quoted"])),
        ("tz", json!("Europe/Paris")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    c.bench_function("render a 10-step preset", |b| {
        b.iter(|| black_box(&preset).render(black_box(&values)).expect("renders"));
    });
}

criterion_group!(benches, render);
criterion_main!(benches);

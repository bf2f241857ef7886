//! The shape of `src/` as a test: which parts may import which. The contracts (events and
//! shared requests) import nothing of ours, the database layer nothing of the bus or the
//! modules, the bus nothing of the modules or the gateway, and a module no other module: they
//! meet through `contracts` and the bus, and `app.rs` wires them. The test fails on any import
//! that breaks a rule, so the shape cannot drift back.

use std::collections::BTreeSet;
use std::path::Path;

/// The parts a part must not import.
fn forbidden(part: &str) -> Vec<&'static str> {
    const MODULES: [&str; 5] = [
        "modules::stock",
        "modules::order",
        "modules::payment",
        "modules::user",
        "modules::frontend",
    ];
    match part {
        "contracts" => [&["db", "bus", "gateway"][..], &MODULES].concat(),
        "db" => [&["bus", "gateway"][..], &MODULES].concat(),
        "bus" | "telemetry" | "gateway" => MODULES
            .into_iter()
            .chain((part == "bus").then_some("gateway"))
            .collect(),
        module => MODULES.into_iter().filter(|m| *m != module).collect(),
    }
}

/// The part of `src/` a file belongs to: `contracts`, `db`, `bus`, `gateway`, `telemetry` or
/// `modules::<name>`; None for the wiring (`app.rs`, `main.rs`, ...).
fn part_of(relative: &Path) -> Option<String> {
    let mut parts = relative.iter().map(|p| p.to_string_lossy().to_string());
    match parts.next()?.as_str() {
        "modules" => {
            let module = parts.next()?;
            (!module.ends_with(".rs")).then(|| format!("modules::{module}"))
        }
        part @ ("contracts" | "db" | "bus" | "gateway" | "telemetry") => Some(part.to_string()),
        _ => None,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (part, imported part) a file's code (not its comments or its tests) names.
fn imports(code: &str, part: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    // A file's unit tests come last; they may reach further than its code.
    let code = code.split("#[cfg(test)]").next().unwrap_or(code);
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        // A grouped import would hide what it names from this check.
        if line.contains("crate::{") || line.contains("crate::modules::{") {
            found.insert((part.to_string(), "crate::{…} (name each path)".to_string()));
        }
        for target in forbidden(part) {
            if line.contains(&format!("crate::{target}")) {
                found.insert((part.to_string(), target.to_string()));
            }
        }
    }
    found
}

#[test]
fn each_part_imports_only_what_the_design_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let mut breaks: BTreeSet<(String, String)> = BTreeSet::new();
    let mut found_at: Vec<String> = vec![];
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let Some(part) = part_of(relative) else {
            continue;
        };
        let code = std::fs::read_to_string(&file).expect("a source file");
        for found in imports(&code, &part) {
            found_at.push(format!(
                "{}: {} imports {}",
                relative.display(),
                found.0,
                found.1
            ));
            breaks.insert(found);
        }
    }
    assert!(
        breaks.is_empty(),
        "imports against the design (see src/architecture.rs): {breaks:?}\n{}",
        found_at.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_and_skips_comments_and_tests() {
    let code = "use crate::bus::Bus;\n// crate::modules::order in a comment\n\
                #[cfg(test)]\nmod tests { use crate::modules::stock; }";
    let found = imports(code, "db");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [("db".to_string(), "bus".to_string())]
    );
    let grouped = imports("use crate::modules::{order, stock};", "modules::user");
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    assert_eq!(
        part_of(Path::new("modules/order/store.rs")).as_deref(),
        Some("modules::order")
    );
    assert_eq!(part_of(Path::new("modules/mod.rs")), None);
    assert_eq!(part_of(Path::new("app.rs")), None);
}

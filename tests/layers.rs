//! The layers depend one way: `api` (the CRDs), `domain` (pure logic, the migration files and plans of
//! `domain/migrations/` included) and `storage` know nothing above them, `engines` (databases, the
//! migration runner of `engines/postgres/migrate/` included) only `domain`, no controller of one
//! kind imports another kind's controller (what two kinds share lives in
//! `controllers/{references,server_access,backup,error,…}.rs`), and controllers reach a database only
//! through `engines`' seam (never `engines::postgres` or sqlx). This test reads the sources and fails
//! on an import that points the wrong way.

use std::{collections::BTreeSet, fs, path::Path};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap()
                .display()
                .to_string();
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// Whether `text` names the top-level module `m`: `crate::m` as a path (`crate::m::x`, `crate::m;`,
/// `crate::m as n`), or `m` as an item at the top of a `use crate::{…};` group (`m`, `m::x`,
/// `m::{…}`, `m as n`).
fn names_module(text: &str, m: &str) -> bool {
    // `m` followed by anything but more of an identifier: `api` but not `api_like` or `apis`.
    let starts_with_module = |s: &str| {
        s.strip_prefix(m)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    };
    let path = format!("crate::{m}");
    if text
        .match_indices(&path)
        .any(|(at, _)| starts_with_module(&text[at + "crate::".len()..]))
    {
        return true;
    }
    text.match_indices("crate::{")
        .any(|(at, _)| group_items(&text[at + "crate::".len()..]).any(&starts_with_module))
}

/// The top-level items of the group `{a, b::{c, d}, e as f}` at the start of `text`: `a`,
/// `b::{c, d}`, `e as f` (trimmed).
fn group_items(text: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item_start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&text[item_start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&text[item_start..i]);
                item_start = i + 1;
            }
            ';' => break,
            _ => {}
        }
    }
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Files under `layer` that name one of `forbidden`.
fn offenders(layer: &str, forbidden: &[&str]) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    sources(&root)
        .into_iter()
        .filter(|(_, text)| forbidden.iter().any(|m| names_module(text, m)))
        .map(|(file, _)| file)
        .collect()
}

#[test]
fn the_import_reader_sees_grouped_imports() {
    assert!(names_module("use crate::api::X;", "api"));
    assert!(names_module(
        "use crate::{\n    api::{A, B},\n    engines::C,\n};",
        "api"
    ));
    assert!(names_module("use crate::{engines::C, api::D};", "api"));
    assert!(!names_module("use crate::{engines::{api_like::C}};", "api"));
    assert!(!names_module("use crate::engines::postgres;", "api"));
}

#[test]
fn the_import_reader_sees_bare_module_items_and_renames() {
    // A module named alone in a group, first, last or in between, on one line or several.
    for text in [
        "use crate::{api, engines::C};",
        "use crate::{engines::C, api};",
        "use crate::{domain, api, engines};",
        "use crate::{\n    api,\n    engines::C,\n};",
        "use crate::{api};",
        "use crate::{engines::{x, y}, api};",
    ] {
        assert!(names_module(text, "api"), "{text}");
    }
    // Renames, as a path or inside a group.
    for text in [
        "use crate::api as a;",
        "pub(crate) use crate::api as crds;",
        "use crate::{api as a, engines::C};",
        "use crate::{engines::C, api::migration_run as run};",
        "use crate::{controllers as c};",
    ] {
        let m = if text.contains("controllers") {
            "controllers"
        } else {
            "api"
        };
        assert!(names_module(text, m), "{text}");
    }
    // Names that only begin like the module, and the module one level down, are not it.
    for text in [
        "use crate::{apis, engines};",
        "use crate::api_like as a;",
        "use crate::{engines::{api}, domain};",
        "use crate::engines::api;",
        "use crate::{engines::api as a};",
    ] {
        assert!(!names_module(text, "api"), "{text}");
    }
}

#[test]
fn api_and_engines_know_nothing_above_them() {
    let above = ["controllers", "operator", "cli"];
    assert_eq!(offenders("api", &above), BTreeSet::new());
    assert_eq!(
        offenders(
            "engines",
            &["api", "controllers", "operator", "cli", "storage"]
        ),
        BTreeSet::new()
    );
}

#[test]
fn domain_and_storage_know_neither_kubernetes_nor_engines() {
    // domain: pure logic (schedules, retention, manifests, migration files and plans); storage: object
    // storage. Neither sees a CRD, a database engine or anything above.
    let above = [
        "api",
        "engines",
        "storage",
        "controllers",
        "operator",
        "cli",
    ];
    assert_eq!(offenders("domain", &above), BTreeSet::new());
    assert_eq!(offenders("storage", &above), BTreeSet::new());
    let kube_free = |layer: &str| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer);
        sources(&root)
            .into_iter()
            .filter(|(_, text)| {
                text.contains("kube::") || text.contains("k8s_openapi::") || text.contains("sqlx::")
            })
            .map(|(file, _)| file)
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(kube_free("domain"), BTreeSet::new());
    assert_eq!(kube_free("storage"), BTreeSet::new());
}

#[test]
fn the_migration_layers_are_where_the_rules_look() {
    // The rules above read every file under src/domain and src/engines: the migration code is there,
    // and no top-level `migrations` module is left to escape them.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(src.join("domain/migrations/mod.rs").is_file());
    assert!(src.join("engines/postgres/migrate/mod.rs").is_file());
    assert!(!src.join("migrations").exists());
    assert!(!src.join("migrations.rs").exists());
    let domain_files: BTreeSet<String> = sources(&src.join("domain"))
        .into_iter()
        .map(|(file, _)| file)
        .collect();
    assert!(domain_files.contains("src/domain/migrations/plan/tests.rs"));
}

#[test]
fn controllers_of_one_kind_do_not_import_another() {
    let kinds = [
        "database_environment",
        "migration_run",
        "backup_schedule",
        "restore_drill",
        "database_server",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
    let mut wrong = Vec::new();
    for (file, text) in sources(&root) {
        let own = kinds
            .iter()
            .find(|k| file.contains(&format!("controllers/{k}")));
        let Some(own) = own else { continue };
        for other in kinds.iter().filter(|k| *k != own) {
            for path in [
                format!("super::{other}"),
                format!("super::super::{other}"),
                format!("controllers::{other}"),
            ] {
                if text.contains(&path) {
                    wrong.push(format!("{file} uses {path}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn controllers_reach_the_engine_through_its_traits() {
    // Controllers call `engines::ENGINE` through the capability traits of `engines`; which engine that
    // is, is decided in `engines/mod.rs` alone. So no controller names `engines::postgres` or talks
    // to a server with sqlx itself (tests of a controller may name the PostgreSQL error they map).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
    let mut wrong = Vec::new();
    for (file, text) in sources(&root) {
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        for what in ["engines::postgres", "postgres::", "sqlx::"] {
            let named = code
                .match_indices(what)
                .any(|(at, _)| !code[..at].ends_with("sqlx::"));
            if named {
                wrong.push(format!("{file} names {what}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_migrate_capability_is_stated_without_an_engine() {
    // `engines/migrate.rs` holds the Migrate trait and the terms a run is asked, reports and ends in;
    // PostgreSQL implements it in `engines/postgres/migrate/`. The terms name no engine, so a second
    // engine's runner can speak them as they are.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engines/migrate.rs");
    let text = fs::read_to_string(file).unwrap();
    let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for what in ["postgres", "Postgres", "Pg", "sqlx", "squawk"] {
        assert!(!code.contains(what), "engines/migrate.rs names {what}");
    }
}

/// The top-level modules of `src/controllers/` (`mod` for `mod.rs` itself) that each of them names:
/// through `super::…` (as many as lead back to `controllers`), `crate::controllers::…`, the items of a
/// `super::{…}` group, and, in `mod.rs`, its own modules by name (`work::Slots`). `pub mod x;` lines,
/// comments and `#[cfg(test)]` code are not imports.
fn controller_imports() -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
    let modules: BTreeSet<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .filter(|m| m != "mod")
        .collect();
    let named_in = |text: &str, at: usize| -> Vec<String> {
        let rest = &text[at..];
        let items: Vec<&str> = if rest.starts_with('{') {
            group_items(rest).collect()
        } else {
            vec![rest]
        };
        items
            .into_iter()
            .map(|item| {
                let name: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) {
                    name
                } else {
                    "mod".to_string()
                }
            })
            .collect()
    };
    let mut graph = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for (file, text) in sources(&root) {
        let rel = file.trim_start_matches("src/controllers/");
        let parts: Vec<&str> = rel.split('/').collect();
        let own = if rel == "mod.rs" {
            "mod".to_string()
        } else {
            parts[0].trim_end_matches(".rs").to_string()
        };
        // How many `super::` lead from this file's module back to `controllers`.
        let depth = parts.len() - usize::from(rel.ends_with("mod.rs"));
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let code: String = code
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !["//", "pub mod ", "mod "].iter().any(|p| l.starts_with(p))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut named = Vec::new();
        for (at, _) in code.match_indices("crate::controllers::") {
            named.extend(named_in(&code, at + "crate::controllers::".len()));
        }
        if depth > 0 {
            let up = "super::".repeat(depth);
            for (at, _) in code.match_indices(&up) {
                let before_is_super = code[..at].ends_with("super::");
                if !before_is_super && !code[at + up.len()..].starts_with("super::") {
                    named.extend(named_in(&code, at + up.len()));
                }
            }
        } else {
            for m in &modules {
                let path = format!("{m}::");
                let named_here = code.match_indices(&path).any(|(at, _)| {
                    !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if named_here {
                    named.push(m.clone());
                }
            }
        }
        let entry = graph.entry(own.clone()).or_default();
        entry.extend(named.into_iter().filter(|m| *m != own));
    }
    graph
}

#[test]
fn no_module_of_controllers_imports_one_that_imports_it() {
    // `controllers/mod.rs` holds what every kind uses (Context, error_policy); each kind keeps its own
    // state and `operator.rs` wires the kinds together, so the arrows inside `controllers/` run one way.
    let graph = controller_imports();
    assert!(
        graph["database_environment"].contains("mod") && graph["mod"].contains("work"),
        "the import reader sees `super::` and mod.rs's own paths: {graph:?}"
    );
    let mut both_ways = Vec::new();
    for (a, named) in &graph {
        for b in named {
            if a < b && graph.get(b).is_some_and(|n| n.contains(a)) {
                both_ways.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(both_ways.is_empty(), "{}", both_ways.join("\n"));
    // Nor round a longer circle: every module is reached from itself by no path.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut next: Vec<&String> = graph[start].iter().collect();
        while let Some(m) = next.pop() {
            assert_ne!(
                m, start,
                "{start} imports a module that leads back to it: {graph:?}"
            );
            if seen.insert(m) {
                next.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
}

//! The committed CRD YAML (crds/ and the Helm chart's crds/) must equal what the Rust types generate.
//! Regenerate with: `cargo run -- crds --output-dir crds --kustomization && cargo run -- crds --output-dir charts/lifeboat/crds`

use std::path::Path;

fn check(dir: &str, kustomization: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let expected = lifeboat::crdgen::files(kustomization).unwrap();
    let mut stale = Vec::new();
    for (file, yaml) in &expected {
        let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if &committed != yaml {
            stale.push(file.clone());
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") || f == "Kustomization")
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = expected.iter().map(|(f, _)| f.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "{dir} holds other files than the generated ones"
    );
    assert!(
        stale.is_empty(),
        "{dir}: {stale:?} differ from the types; regenerate with `cargo run -- crds --output-dir {dir}{}`",
        if kustomization {
            " --kustomization"
        } else {
            ""
        }
    );
}

#[test]
fn crds_directory_matches_the_types() {
    check("crds", true);
}

#[test]
fn chart_crds_match_the_types() {
    check("charts/lifeboat/crds", false);
}

#[test]
fn field_reference_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference");
    let stale: Vec<String> = lifeboat::crdgen::reference::pages()
        .into_iter()
        .filter(|(file, text)| {
            std::fs::read_to_string(root.join(file)).unwrap_or_default() != *text
        })
        .map(|(file, _)| file)
        .collect();
    assert!(
        stale.is_empty(),
        "docs/reference: {stale:?} differ from the types; regenerate with `cargo run -- crds --reference-dir docs/reference`"
    );
}

//! Golden renderings of the objects Lifeboat writes (tests only), shared by the kinds that render them.

/// Compares `rendered` with `tests/fixtures/rendered/<name>.json` as JSON values (field order aside;
/// every field and value equal). `LIFEBOAT_BLESS_RENDERED=1` writes the file instead: the files
/// were written from the `json!` manifests, before they became typed objects.
pub fn assert_rendered(name: &str, rendered: serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rendered")
        .join(format!("{name}.json"));
    if std::env::var_os("LIFEBOAT_BLESS_RENDERED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&rendered).unwrap();
        std::fs::write(&path, text + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        rendered,
        expected,
        "{name}: the rendered objects differ from {}",
        path.display()
    );
}

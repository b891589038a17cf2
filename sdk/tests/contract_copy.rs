//! The SDK builds from its own copy of the contract (`sdk/wit/plugin.wit`), so that it builds outside this
//! repository; the copy must be the released contract it names, byte for byte.

#[test]
fn the_sdk_wit_is_the_released_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = std::fs::read_to_string(root.join("wit/plugin.wit")).unwrap();
    let version = copy
        .lines()
        .find_map(|l| l.trim().strip_prefix("package weir:plugin@"))
        .map(|v| v.trim_end_matches(';').to_string())
        .expect("a `package weir:plugin@<version>;` line");
    let released = std::fs::read_to_string(root.join(format!("../wit/v{version}/plugin.wit"))).unwrap();
    assert!(copy == released, "sdk/wit/plugin.wit differs from wit/v{version}/plugin.wit: copy it again");
}

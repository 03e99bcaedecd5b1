//! Every `identity` command line the documents show exists: its flags are
//! in the binary's `--help` (`testkit::docs`).

#[test]
fn documented_commands_exist() {
    let checked =
        testkit::docs::check_documented_commands("identity", env!("CARGO_BIN_EXE_identity"));
    assert!(checked > 0, "the documents show no `identity` command");
}

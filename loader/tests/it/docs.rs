//! Every `loader` command line the documents show exists: its subcommands and
//! flags are in the binary's `--help` (`testkit::docs`).

#[test]
fn documented_commands_exist() {
    let checked = testkit::docs::check_documented_commands("loader", env!("CARGO_BIN_EXE_loader"));
    assert!(checked > 0, "the documents show no `loader` command");
}

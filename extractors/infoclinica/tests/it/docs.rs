//! Every `infoclinica-extractor` command line the documents show exists: its subcommands and
//! flags are in the binary's `--help` (`testkit::docs`).

#[test]
fn documented_commands_exist() {
    let checked = testkit::docs::check_documented_commands(
        "infoclinica-extractor",
        env!("CARGO_BIN_EXE_infoclinica-extractor"),
    );
    assert!(
        checked > 0,
        "the documents show no `infoclinica-extractor` command"
    );
}

// Rebuild when a migration changes: `sqlx::migrate!` embeds them at compile
// time, and incremental builds would otherwise miss a new file.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

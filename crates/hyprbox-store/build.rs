// The migrations are embedded by `sqlx::migrate!`, which cannot see a file added to the
// directories: this makes a new migration rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

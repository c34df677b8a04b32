//! `sqlx::migrate!` embeds the migration files at compile time but cannot
//! tell cargo to rebuild when a new one is added; this does.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

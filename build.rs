// Rebuild when a migration is added: `sqlx::migrate!` embeds them at compile time.
fn main() {
    for module in ["stock", "order", "payment", "user"] {
        println!("cargo:rerun-if-changed=src/modules/{module}/migrations");
    }
}

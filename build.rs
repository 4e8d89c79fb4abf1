//! Embeds the provider catalog (`providers/*.yaml`) in the binary: one `(name, text)` pair
//! per file, in name order.

use std::path::Path;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=providers");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map_err(std::io::Error::other)?;
    let out_dir = std::env::var("OUT_DIR").map_err(std::io::Error::other)?;
    let dir = Path::new(&manifest).join("providers");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::from("pub static FILES: &[(&str, &str)] = &[\n");
    for p in &files {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        println!("cargo:rerun-if-changed={}", p.display());
        out.push_str(&format!(
            "    ({stem:?}, include_str!({:?})),\n",
            p.display()
        ));
    }
    out.push_str("];\n");
    std::fs::write(Path::new(&out_dir).join("providers.rs"), out)
}

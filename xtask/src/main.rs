//! Project tooling that is easier to keep correct in Rust than in shell.
//!
//! `cargo xtask edge` compiles the edge workspace for `wasm32-wasip1` and encodes
//! each crate as a WASI 0.2 component in `target/wasm/<name>.wasm`, the paths
//! `spin.toml` names. It takes the rustup target when it is installed and
//! otherwise Debian's Rust with `-Zbuild-std` (see ../shared/notes), installing
//! the Debian packages non-interactively when they are missing.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use wasi_preview1_component_adapter_provider as adapters;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the edge components into target/wasm/.
    Edge,
}

/// Each edge crate, and the adapter its core module needs: the gateway serves
/// HTTP (proxy adapter), the policies are libraries (reactor adapter).
const COMPONENTS: &[(&str, Adapter)] = &[
    ("gateway", Adapter::Proxy),
    ("auth", Adapter::Reactor),
    ("ratelimit", Adapter::Reactor),
    ("cache", Adapter::Reactor),
    ("probe", Adapter::Proxy),
];

#[derive(Clone, Copy)]
enum Adapter {
    Proxy,
    Reactor,
}

const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "lld-22",
    "wasi-libc",
];
const TARGET: &str = "wasm32-wasip1";

/// Every component starts with 2 MiB of linear memory (the 1 MiB stack, the
/// data, and about 900 KiB of heap) instead of the 17 or 18 pages the linker
/// picks: a request then runs without `memory.grow`, which cost the host two
/// `mprotect` calls per memory per request (one to grow, one to shrink it back
/// for the next instance) and a TLB shootdown on every core. sluice-host keeps
/// the same 2 MiB resident between requests (`app::engine`). BENCHMARKS.md,
/// 2026-12-03 (m).
const LINK_FLAGS: &str = "-C link-arg=--initial-memory=2097152";

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Edge => build_edge(),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build_edge() -> Result<()> {
    let root = repo_root();
    let edge = root.join("edge");
    compile(&edge)?;
    let out_dir = root.join("target/wasm");
    std::fs::create_dir_all(&out_dir)?;
    for (name, adapter) in COMPONENTS {
        let module = edge.join(format!("target/{TARGET}/release/sluice_{name}.wasm"));
        let out = out_dir.join(format!("{name}.wasm"));
        if is_newer(&out, &module) {
            continue;
        }
        let bytes =
            std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
        let component = encode(&bytes, *adapter).with_context(|| format!("encoding {name}"))?;
        std::fs::write(&out, component)?;
        println!("component {}", out.display());
    }
    Ok(())
}

fn is_newer(out: &Path, input: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(out), modified(input)), (Some(o), Some(i)) if o >= i)
}

fn encode(module: &[u8], adapter: Adapter) -> Result<Vec<u8>> {
    let adapter_bytes = match adapter {
        Adapter::Proxy => adapters::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        Adapter::Reactor => adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .adapter(adapters::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter_bytes)?
        .encode()
}

fn compile(edge: &Path) -> Result<()> {
    let status = if rustup_has_target() {
        Command::new("cargo")
            .args(["build", "--release", "--target", TARGET])
            .current_dir(edge)
            .env("RUSTFLAGS", LINK_FLAGS)
            .status()?
    } else {
        ensure_debian_toolchain()?;
        // Debian's cargo runs whichever rustc PATH finds first; rustup's proxies
        // must not win, and the wasm std is built from rust-web-src.
        let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
        Command::new("/usr/bin/cargo")
            .args([
                "build",
                "--release",
                "--target",
                TARGET,
                "-Zbuild-std=std,panic_abort",
            ])
            .current_dir(edge)
            .env("PATH", path)
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "RUSTFLAGS",
                format!("-C link-self-contained=no -L /usr/lib/wasm32-wasi {LINK_FLAGS}"),
            )
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC_WRAPPER")
            .status()?
    };
    if !status.success() {
        bail!("edge build failed ({status})");
    }
    Ok(())
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false)
}

fn ensure_debian_toolchain() -> Result<()> {
    let present = Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library").exists()
        && Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
        && Path::new("/usr/bin/rust-lld").exists();
    if present {
        return Ok(());
    }
    println!(
        "installing Debian's Rust for the wasm build: {}",
        DEBIAN_PACKAGES.join(" ")
    );
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            bail!(
                "apt-get {} failed ({status}); run it as root",
                args.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q"];
    install.extend_from_slice(DEBIAN_PACKAGES);
    apt(&install)
}

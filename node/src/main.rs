//! The `gridmesh` binary. See `gridmesh --help`.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    gridmesh::cli::main()
}

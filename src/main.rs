#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: the server allocates per row and per request across
/// many threads, and glibc spent about a sixth of its CPU in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    airlock::cli::main()
}

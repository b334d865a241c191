// A fleet's calls allocate on the call threads what the run's thread frees, and back; glibc's
// malloc pays for every such crossing (its arenas' locks and consolidation were a tenth of the
// run's thread). mimalloc frees across threads without a lock. Measured side by side, rounds
// interleaved (bench/JOURNAL.md): a fleet target 22.7 -> 18.2 µs, a recorded step on tmpfs
// 24.3 -> 20.8 µs, `medic runs list` 424 -> 275 µs; idle `medic serve` 18.7 -> 20.2 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    medic::cli::main()
}

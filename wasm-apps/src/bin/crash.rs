//! Misbehaves on purpose: prints a line, then exits 1 (or traps with `crash trap`).

fn main() {
    println!("about to crash");
    if std::env::args().nth(1).as_deref() == Some("trap") {
        // An out-of-bounds index compiles to a trap (`unreachable`) in Wasm.
        let values: Vec<u8> = Vec::new();
        let index = std::env::args().count() + 7;
        println!("{}", values[index]);
    }
    std::process::exit(1);
}

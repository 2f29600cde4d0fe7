//! Allocates and touches 8 MiB at a time until memory runs out, printing how much it holds. Optional
//! arguments: PAUSE_MS between allocations (default 0), and MAX_MIB to hold at most (then it idles).

fn main() {
    let mut args = std::env::args().skip(1);
    let pause: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let max_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(usize::MAX);
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        if held.len() * 8 + 8 <= max_mib {
            let chunk = vec![1u8; 8 << 20];
            held.push(chunk);
            println!("holding {} MiB", held.len() * 8);
        }
        if held.len() * 8 + 8 > max_mib {
            std::thread::sleep(std::time::Duration::from_secs(1));
        } else if pause > 0 {
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
    }
}

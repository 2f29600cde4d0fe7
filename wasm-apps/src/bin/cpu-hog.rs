//! Spins forever, printing a heartbeat every N iterations (N from the first argument, default 500 million).

fn main() {
    let every: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500_000_000).max(1);
    let mut x: u64 = 1;
    let mut i: u64 = 0;
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        i += 1;
        if i % every == 0 {
            println!("still spinning {x}");
        }
    }
}

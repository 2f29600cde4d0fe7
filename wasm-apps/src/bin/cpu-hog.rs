//! Spins forever, printing a heartbeat every few hundred million iterations.

fn main() {
    let mut x: u64 = 1;
    let mut i: u64 = 0;
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        i += 1;
        if i % 500_000_000 == 0 {
            println!("still spinning {x}");
        }
    }
}

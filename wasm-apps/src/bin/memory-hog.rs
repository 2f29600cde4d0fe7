//! Allocates and touches 8 MiB at a time until memory runs out, printing how much it holds.

fn main() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let chunk = vec![1u8; 8 << 20];
        held.push(chunk);
        println!("holding {} MiB", held.len() * 8);
    }
}

//! A TCP echo server (wasi:sockets; run it as a wasm32-wasip2 component): listens on 0.0.0.0 and the port in its
//! first argument (default 7000), greets each client with its pod name, then echoes what it sends, one client
//! after another.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(7000);
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "an unnamed pod".into());
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = writeln!(stream, "echo from {pod}");
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
    }
}

//! An HTTP load client (wasi:sockets; run it as a wasm32-wasip2 component): `http-get HOST:PORT COUNT [PATH]`
//! resolves HOST (a Service name works inside a pod), sends COUNT GET requests over one keep-alive connection
//! (reconnecting if the server closes it) and prints each response body, then a `done: N ok, M failed` line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(count)) = (args.next(), args.next().and_then(|c| c.parse::<u32>().ok())) else {
        eprintln!("usage: http-get HOST:PORT COUNT [PATH]");
        std::process::exit(2);
    };
    let path = args.next().unwrap_or_else(|| "/".to_owned());
    let host = target.split(':').next().unwrap_or_default().to_owned();
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut connection: Option<BufReader<TcpStream>> = None;
    for _ in 0..count {
        if connection.is_none() {
            match TcpStream::connect(target.as_str()) {
                Ok(stream) => connection = Some(BufReader::new(stream)),
                Err(e) => {
                    println!("error: cannot connect to {target}: {e}");
                    failed += 1;
                    continue;
                }
            }
        }
        let Some(reader) = connection.as_mut() else { continue };
        match get(reader, &host, &path) {
            Ok((status, body)) if status == 200 => {
                println!("{}", body.trim_end());
                ok += 1;
            }
            Ok((status, body)) => {
                println!("error: status {status}: {}", body.trim_end());
                failed += 1;
            }
            Err(e) => {
                println!("error: {e}");
                failed += 1;
                connection = None;
            }
        }
    }
    println!("done: {ok} ok, {failed} failed");
}

/// One request on a keep-alive connection: the status code and the body (Content-Length framed).
fn get(reader: &mut BufReader<TcpStream>, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("transfer-encoding")
        {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked { read_chunked(reader)? } else { read_exact(reader, length)? };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn read_exact(reader: &mut BufReader<TcpStream>, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// A chunked body: hex size lines, each chunk followed by CRLF, ended by a zero-size chunk and an empty line.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        body.extend(read_exact(reader, size)?);
        line.clear();
        reader.read_line(&mut line)?;
    }
}

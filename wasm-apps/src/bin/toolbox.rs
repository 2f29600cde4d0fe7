//! A multi-call tool for exec, attach and debug tests, like busybox: the tool is argv[0] (as `kubectl exec POD
//! -- cat` runs it), or argv[1] when argv[0] names no tool (a container's default argv[0] is its name).
//!
//! - `repl`: prints `ready`, then `echo: LINE` for each line of stdin; at its end prints `stdin closed` and
//!   `tick N` every 200 ms, forever (a long-running container to attach to).
//! - `cat`: copies stdin to stdout as it comes.
//! - `echo ARGS`, `echo-err ARGS`: print ARGS to stdout, to stderr.
//! - `exit N`: exits with N. `trap`: traps (a Wasm `unreachable`).
//! - `env`: prints the environment, sorted. `ls DIR`: prints DIR's entries, sorted.
//! - `read PATH`: prints the file. `write PATH TEXT`: writes TEXT into it.

use std::io::{BufRead, Read, Write};

const TOOLS: [&str; 11] = [
    "repl", "cat", "echo", "echo-err", "exit", "trap", "env", "ls", "read", "write", "sleep",
];

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.first().is_some_and(|a| !TOOLS.contains(&a.as_str())) {
        args.remove(0);
    }
    let tool = args.first().cloned().unwrap_or_else(|| "repl".into());
    let rest = args.get(1..).unwrap_or_default();
    let code = match tool.as_str() {
        "repl" => repl(),
        "cat" => {
            let (mut input, mut output) = (std::io::stdin(), std::io::stdout());
            let mut buffer = [0u8; 4096];
            while let Ok(n) = input.read(&mut buffer)
                && n > 0
            {
                if output.write_all(&buffer[..n]).and_then(|()| output.flush()).is_err() {
                    break;
                }
            }
            0
        }
        "echo" => {
            println!("{}", rest.join(" "));
            0
        }
        "echo-err" => {
            eprintln!("{}", rest.join(" "));
            0
        }
        "exit" => rest.first().and_then(|c| c.parse().ok()).unwrap_or(1),
        "trap" => std::process::abort(),
        "env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            println!("{}", vars.join("\n"));
            0
        }
        "ls" => match std::fs::read_dir(rest.first().map_or(".", String::as_str)) {
            Ok(entries) => {
                let mut names: Vec<String> =
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                names.sort();
                println!("{}", names.join("\n"));
                0
            }
            Err(e) => fail(&format!("ls: {e}")),
        },
        "read" => match std::fs::read_to_string(rest.first().map_or("", String::as_str)) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => fail(&format!("read: {e}")),
        },
        "write" => match (rest.first(), rest.get(1)) {
            (Some(path), Some(text)) => match std::fs::write(path, text) {
                Ok(()) => 0,
                Err(e) => fail(&format!("write: {e}")),
            },
            _ => fail("usage: write PATH TEXT"),
        },
        "sleep" => {
            let seconds = rest.first().and_then(|s| s.parse().ok()).unwrap_or(3600);
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            0
        }
        other => fail(&format!("{other}: no such tool")),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn fail(message: &str) -> i32 {
    eprintln!("{message}");
    1
}

fn repl() -> i32 {
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        println!("echo: {line}");
    }
    println!("stdin closed");
    for tick in 0u64.. {
        println!("tick {tick}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    0
}

//! A batch job: sums the squares of 1..=N (N from the first argument, default 1000000), prints the result and
//! exits 0. With `EXIT_CODE` set it exits with that code instead, after printing. `READ_FILE` and `WRITE_FILE`
//! name files to read and write first, reporting what happened (for volume and sandbox tests). `FAIL_ONCE`
//! names a marker file: if it is missing, the run creates it and fails (exit 1), so a retry succeeds.
//! `PRINT_ENV=PREFIX` prints every environment variable whose name starts with PREFIX, sorted.

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let sum = (1..=n).fold(0u64, |acc, i| acc.wrapping_add(i.wrapping_mul(i)));
    println!("sum of squares 1..={n} = {sum}");
    if let Some(name) = std::env::var("POD_NAME").ok() {
        println!("running in pod {name}");
    }
    if let Ok(prefix) = std::env::var("PRINT_ENV") {
        let mut vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(&prefix)).collect();
        vars.sort();
        for (name, value) in vars {
            println!("{name}={value}");
        }
    }
    for path in std::env::var("READ_FILE").ok().into_iter().flat_map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>()) {
        match std::fs::read_to_string(&path) {
            Ok(text) => println!("read {path}: {}", text.trim()),
            Err(e) => println!("cannot read {path}: {e}"),
        }
    }
    for path in std::env::var("WRITE_FILE").ok().into_iter().flat_map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>()) {
        match std::fs::write(&path, "written") {
            Ok(()) => println!("wrote {path}"),
            Err(e) => println!("cannot write {path}: {e}"),
        }
    }
    if let Ok(marker) = std::env::var("FAIL_ONCE") {
        if std::fs::metadata(&marker).is_err() {
            let _ = std::fs::write(&marker, "failed once");
            eprintln!("failing on purpose, once");
            std::process::exit(1);
        }
    }
    eprintln!("batch done");
    if let Some(code) = std::env::var("EXIT_CODE").ok().and_then(|c| c.parse().ok()) {
        std::process::exit(code);
    }
}

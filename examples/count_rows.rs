//! Reads a `pg_dump -Fc --compress=0` archive on stdin and prints what backstop's stream
//! observer learns from it (tables, exact row counts) and how fast it read: the cost of
//! taking row counts from the dump stream instead of a second `count(*)` scan.

use std::io::Read;
use std::time::Instant;

fn main() {
    let mut obs = backstop::postgres::archive::DumpObserver::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let start = Instant::now();
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                obs.feed(&buf[..n]);
                total += n as u64;
            }
            Err(e) => {
                eprintln!("read error: {e}");
                std::process::exit(1);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match obs.finish() {
        Ok(f) => {
            for t in &f.tables {
                println!("{}.{}\t{}", t.schema, t.table, t.rows);
            }
            eprintln!(
                "observed {} MiB in {secs:.2} s ({:.0} MiB/s, including the pipe)",
                total >> 20,
                (total as f64 / 1048576.0) / secs
            );
        }
        Err(e) => {
            eprintln!("not understood: {e}");
            std::process::exit(1);
        }
    }
}

//! Times the status page's rendering for many jobs with long histories (what the daemon
//! does per request from its cache): `cargo run --release --example page_bench [JOBS SNAPSHOTS]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let snaps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..7 {
        let (t, n) = backstop::ops::page::bench_render(jobs, snaps);
        times.push(t);
        size = n;
    }
    times.sort();
    println!(
        "{jobs} jobs x {snaps} snapshots: render median {:.1} ms (min {:.1}, max {:.1}), page {} KiB",
        times[3].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[6].as_secs_f64() * 1000.0,
        size / 1024
    );
}

//! Readings from /proc: CPU time by process group and the machine's busy
//! time (for CPU per request), and resident memory of given processes,
//! sampled over a run (for "memory under load" and "memory flat").

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// CPU time (clock ticks) by process group, read from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSnapshot {
    /// This process.
    pub bench: u64,
    /// This process's threads whose names start with a prefix (see
    /// [`thread_ticks`]); 0 unless the caller fills it in.
    pub threads: u64,
    /// Children of this process that exited and were waited for.
    pub bench_children: u64,
    /// Every `postgres` process, plus exited backends reaped by the postmaster.
    pub postgres: u64,
    /// The Erlang VM and its helpers.
    pub rabbitmq: u64,
    /// The whole machine, busy ticks.
    pub busy: u64,
}

fn stat_fields(text: &str) -> Option<(String, Vec<u64>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields = text[close + 1..]
        .split_whitespace()
        .skip(1) // state
        .map(|field| field.parse::<i64>().unwrap_or(0).max(0) as u64)
        .collect();
    Some((comm, fields))
}

/// utime, stime, cutime, cstime: fields 14 to 17, i.e. 11 to 14 after the state.
fn times(fields: &[u64]) -> (u64, u64) {
    let own = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    let children = fields.get(12).copied().unwrap_or(0) + fields.get(13).copied().unwrap_or(0);
    (own, children)
}

/// CPU ticks of this process's live threads whose names start with
/// `prefix`, e.g. a load generator's own runtime, to tell its CPU from the
/// server's in the same process. Threads that exited are not counted, so
/// give the measured side long-lived threads and take the other side as
/// the difference from the process total.
pub fn thread_ticks(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|text| stat_fields(&text))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, fields)| times(&fields).0)
        .sum()
}

/// CPU ticks of one process (its own, not its children's).
pub fn process_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| stat_fields(&text))
        .map_or(0, |(_, fields)| times(&fields).0)
}

pub fn cpu_snapshot() -> CpuSnapshot {
    let mut snapshot = CpuSnapshot::default();
    if let Ok(text) = std::fs::read_to_string("/proc/self/stat")
        && let Some((_, fields)) = stat_fields(&text)
    {
        (snapshot.bench, snapshot.bench_children) = times(&fields);
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((comm, fields)) = stat_fields(&text) else {
                continue;
            };
            let (own, children) = times(&fields);
            if comm == "postgres" {
                snapshot.postgres += own + children;
            } else if comm.starts_with("beam")
                || comm == "erl_child_setup"
                || comm == "epmd"
                || comm == "inet_gethost"
            {
                snapshot.rabbitmq += own + children;
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = text.lines().next()
    {
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        snapshot.busy = fields.iter().take(8).sum::<u64>() - idle;
    }
    snapshot
}

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine's busy share between two snapshots, in percent of all cores.
pub fn busy_percent(before: &CpuSnapshot, after: &CpuSnapshot, elapsed: Duration) -> f64 {
    let tick_ms = 1000.0 / clock_ticks();
    after.busy.saturating_sub(before.busy) as f64 * tick_ms
        / (elapsed.as_secs_f64() * 1000.0 * cores() as f64)
        * 100.0
}

/// Resident memory of `pid` in KiB (VmRSS), or `None` once it has gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// One reading: seconds since the sampler started, and the summed RSS (KiB).
pub type RssSample = (f64, u64);

/// Samples the summed resident memory of a set of processes every
/// `interval` on a thread of its own (so a busy runtime cannot skip samples)
/// until stopped.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<RssSample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, interval: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, stopped) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let total: u64 = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();
                log.lock()
                    .unwrap()
                    .push((started.elapsed().as_secs_f64(), total));
                std::thread::sleep(interval);
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<RssSample> {
        self.samples.lock().unwrap().clone()
    }

    /// The largest sum since `from` seconds (KiB).
    pub fn peak_since(&self, from: f64) -> u64 {
        self.samples()
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    }

    /// Seconds since the sampler started, on its clock.
    pub fn last_at(&self) -> f64 {
        self.samples().last().map_or(0.0, |(at, _)| *at)
    }

    pub fn stop(mut self) -> Vec<RssSample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_is_sampled() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        let sampler = RssSampler::start(vec![pid], Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(50));
        let samples = sampler.stop();
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(samples.iter().all(|(_, kib)| *kib > 0));
    }
}

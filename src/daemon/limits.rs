//! The daemon's resource bounds: what the host allows (RAM, cores, open files), the limits that
//! follow from `server:` settings and those facts, and the gate that caps concurrent API queries
//! globally and per token.
//!
//! Defaults are chosen so that the worst case fits the host: `max_concurrent_queries ×
//! query_memory_limit_mb` stays within half the RAM, and `max_connections` within the open-file
//! limit (docs/security.md, "Limits"). The HTTP listener (`daemon::http`) and the query handler
//! (`api::query`) read them here; nothing in this module does I/O beyond reading `/proc` and
//! `getrlimit` once.

use crate::spec::model::ServerSettings;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// What the host offers, read once.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    /// `MemTotal` of /proc/meminfo, in MiB (None when unreadable).
    pub memory_mb: Option<u64>,
    pub cores: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
}

impl Host {
    pub fn get() -> Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        *HOST.get_or_init(|| Host {
            memory_mb: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| mem_total_mb(&t)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            open_files: open_files_limit(),
        })
    }
}

fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// File descriptors kept free for everything but client connections: DuckDB files, Parquet
/// reads, the state, the watcher's inotify, query processes' pipes, logs.
const RESERVED_FDS: u64 = 256;
/// Connections allowed however small the open-file limit (the daemon must stay reachable).
const MIN_CONNECTIONS: u64 = 16;
const DEFAULT_QUERY_MEMORY_MB: u64 = 1024;
const MIN_QUERY_MEMORY_MB: u64 = 64;
const DEFAULT_CONCURRENT_QUERIES: u64 = 4;
const DEFAULT_CONCURRENT_QUERIES_PER_TOKEN: u64 = 2;

/// The limits in force, from the settings and the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub query_timeout: Duration,
    pub query_max_rows: u64,
    pub query_max_bytes: u64,
    /// The hard memory limit of one query's process, in MiB.
    pub query_memory_mb: u64,
    pub query_threads: u64,
    pub max_queries: usize,
    pub max_queries_per_token: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn new(s: &ServerSettings, host: &Host) -> Limits {
        // An eighth of the RAM per query, at most 1 GiB: four at once take half of it.
        let query_memory_mb = s.query_memory_limit_mb.unwrap_or_else(|| {
            host.memory_mb.map_or(DEFAULT_QUERY_MEMORY_MB, |m| {
                (m / 8).clamp(MIN_QUERY_MEMORY_MB, DEFAULT_QUERY_MEMORY_MB)
            })
        });
        let max_queries = s.max_concurrent_queries.unwrap_or_else(|| {
            host.memory_mb.map_or(DEFAULT_CONCURRENT_QUERIES, |m| {
                (m / 2 / query_memory_mb.max(1)).clamp(1, DEFAULT_CONCURRENT_QUERIES)
            })
        });
        let max_queries_per_token = s
            .max_concurrent_queries_per_token
            .unwrap_or(DEFAULT_CONCURRENT_QUERIES_PER_TOKEN)
            .min(max_queries);
        let query_threads = s
            .query_threads
            .unwrap_or_else(|| (host.cores / 2).clamp(1, 4));
        let max_connections = match host.open_files {
            Some(n) => s
                .max_connections
                .min(n.saturating_sub(RESERVED_FDS).max(MIN_CONNECTIONS)),
            None => s.max_connections,
        };
        Limits {
            query_timeout: Duration::from_secs(s.query_timeout_seconds),
            query_max_rows: s.query_max_rows,
            query_max_bytes: s.query_max_bytes,
            query_memory_mb,
            query_threads,
            max_queries: max_queries as usize,
            max_queries_per_token: max_queries_per_token as usize,
            header_read_timeout: Duration::from_secs(s.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
            max_connections: max_connections as usize,
        }
    }

    /// What an operator should hear about at start: settings the host cannot honour.
    pub fn warnings(&self, s: &ServerSettings, host: &Host) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = host.memory_mb {
            let worst = self.max_queries as u64 * self.query_memory_mb;
            if worst > m {
                out.push(format!(
                    "server.max_concurrent_queries × server.query_memory_limit_mb = {worst} MiB, \
                     more than this host's {m} MiB of RAM: concurrent queries can exhaust it"
                ));
            }
        }
        if (self.max_connections as u64) < s.max_connections {
            out.push(format!(
                "server.max_connections lowered from {} to {}: the open-file limit is {} \
                 (raise it with `ulimit -n` or LimitNOFILE= in the service unit)",
                s.max_connections,
                self.max_connections,
                host.open_files.unwrap_or_default()
            ));
        }
        out
    }
}

/// Which cap refused a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// `max_concurrent_queries`.
    Global,
    /// `max_concurrent_queries_per_token`.
    Token,
}

/// Counts running API queries, in total and per token. A [`QuerySlot`] is taken before a query
/// starts and given back when it is dropped — by whatever owns the query's process until it has
/// exited, so a query that is being stopped still counts.
///
/// Counters under a mutex rather than semaphores: the caps follow settings changes without
/// resizing anything, and a per-token count needs a map either way.
#[derive(Default)]
pub struct QueryGate {
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    total: usize,
    by_token: HashMap<String, usize>,
}

impl QueryGate {
    pub fn try_acquire(
        self: &Arc<Self>,
        token: &str,
        max_total: usize,
        max_per_token: usize,
    ) -> Result<QuerySlot, Full> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if r.total >= max_total {
            return Err(Full::Global);
        }
        let mine = r.by_token.get(token).copied().unwrap_or(0);
        if mine >= max_per_token {
            return Err(Full::Token);
        }
        r.total += 1;
        r.by_token.insert(token.to_string(), mine + 1);
        Ok(QuerySlot {
            gate: self.clone(),
            token: token.to_string(),
        })
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.running.lock().map_or(0, |r| r.total)
    }
}

/// One running query's place in the [`QueryGate`]; dropping it frees the place.
pub struct QuerySlot {
    gate: Arc<QueryGate>,
    token: String,
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let mut r = self.gate.running.lock().unwrap_or_else(|e| e.into_inner());
        r.total = r.total.saturating_sub(1);
        if let Some(n) = r.by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                r.by_token.remove(&self.token);
            }
        }
    }
}

/// Caps the runs the daemon works on at once (`scheduler.max_concurrent_runs`). A run over the cap
/// waits in line on its own thread, first come first served; none is dropped. The cap is read at
/// each look, so a settings change applies to the runs still waiting.
#[derive(Default)]
pub struct RunGate {
    state: Mutex<Line>,
    changed: Condvar,
}

#[derive(Default)]
struct Line {
    running: usize,
    next: u64,
    waiting: std::collections::VecDeque<u64>,
}

impl RunGate {
    /// Waits for a place; `None` when `give_up` turns true first (the daemon is stopping).
    pub fn acquire(
        self: &Arc<Self>,
        max: impl Fn() -> usize,
        give_up: impl Fn() -> bool,
    ) -> Option<RunSlot> {
        let mut line = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = line.next;
        line.next += 1;
        line.waiting.push_back(ticket);
        loop {
            if line.waiting.front() == Some(&ticket) && line.running < max().max(1) {
                line.waiting.pop_front();
                line.running += 1;
                // The next in line may fit too.
                self.changed.notify_all();
                return Some(RunSlot { gate: self.clone() });
            }
            if give_up() {
                line.waiting.retain(|t| *t != ticket);
                self.changed.notify_all();
                return None;
            }
            // Woken when a place frees; the timeout also notices a new cap or a shutdown.
            line = self
                .changed
                .wait_timeout(line, Duration::from_millis(250))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs working now, and runs waiting for a place.
    pub fn counts(&self) -> (usize, usize) {
        let line = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (line.running, line.waiting.len())
    }
}

/// A run's place in the [`RunGate`]; dropping it lets the next one in.
pub struct RunSlot {
    gate: Arc<RunGate>,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut line = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        line.running = line.running.saturating_sub(1);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_gate_lets_in_at_most_max_and_queues_the_rest_in_order() {
        let gate = Arc::new(RunGate::default());
        let first = gate.acquire(|| 2, || false).unwrap();
        let second = gate.acquire(|| 2, || false).unwrap();
        assert_eq!(gate.counts(), (2, 0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            // Each waiter is in line before the next one starts.
            let (g, o) = (gate.clone(), order.clone());
            waiters.push(std::thread::spawn(move || {
                let slot = g.acquire(|| 2, || false).unwrap();
                o.lock().unwrap().push(i);
                slot
            }));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while gate.counts().1 < i + 1 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "waiter {i} never queued"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(gate.counts(), (2, 3));
        drop(first);
        let a = waiters.remove(0).join().unwrap();
        assert_eq!(*order.lock().unwrap(), [0]);
        drop(second);
        drop(a);
        let rest: Vec<RunSlot> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(gate.counts(), (2, 0));
        drop(rest);
        assert_eq!(gate.counts(), (0, 0));
        // Giving up leaves the line.
        let _held = (gate.acquire(|| 1, || false).unwrap(),);
        assert!(gate.acquire(|| 1, || true).is_none());
        assert_eq!(gate.counts(), (1, 0));
    }

    fn host(memory_mb: u64, cores: u64, open_files: u64) -> Host {
        Host {
            memory_mb: Some(memory_mb),
            cores,
            open_files: Some(open_files),
        }
    }

    #[test]
    fn defaults_fit_the_host() {
        let s = ServerSettings::default();
        let big = Limits::new(&s, &host(32_768, 16, 65_536));
        assert_eq!(
            (
                big.query_memory_mb,
                big.max_queries,
                big.max_queries_per_token
            ),
            (1024, 4, 2)
        );
        assert_eq!((big.query_threads, big.max_connections), (4, 512));
        // 2 GiB of RAM: 256 MiB per query, four of them take half.
        let small = Limits::new(&s, &host(2048, 2, 1024));
        assert_eq!((small.query_memory_mb, small.max_queries), (256, 4));
        assert_eq!(small.query_threads, 1);
        // An open-file limit of 1024 leaves room for 768 connections: 512 stays.
        assert_eq!(small.max_connections, 512);
        let tight = Limits::new(&s, &host(2048, 2, 300));
        assert_eq!(tight.max_connections, 44);
        assert!(tight.warnings(&s, &host(2048, 2, 300))[0].contains("lowered from 512 to 44"));
        // Explicit memory that does not fit: concurrency shrinks when not set, a warning when set.
        let s = ServerSettings {
            query_memory_limit_mb: Some(4096),
            ..ServerSettings::default()
        };
        let l = Limits::new(&s, &host(8192, 2, 1024));
        assert_eq!((l.max_queries, l.max_queries_per_token), (1, 1));
        let s = ServerSettings {
            max_concurrent_queries: Some(8),
            ..s
        };
        let l = Limits::new(&s, &host(8192, 2, 1024));
        assert!(l.warnings(&s, &host(8192, 2, 1024))[0].contains("32768 MiB"));
    }

    #[test]
    fn meminfo_is_read_in_mib() {
        let text = "MemTotal:       24683652 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mb(text), Some(24105));
        assert_eq!(mem_total_mb("nothing"), None);
    }

    #[test]
    fn the_gate_caps_in_total_and_per_token_and_frees_on_drop() {
        let gate = Arc::new(QueryGate::default());
        let a1 = gate.try_acquire("a", 3, 2).unwrap();
        let _a2 = gate.try_acquire("a", 3, 2).unwrap();
        assert_eq!(gate.try_acquire("a", 3, 2).err(), Some(Full::Token));
        let _b1 = gate.try_acquire("b", 3, 2).unwrap();
        assert_eq!(gate.try_acquire("c", 3, 2).err(), Some(Full::Global));
        assert_eq!(gate.running(), 3);
        drop(a1);
        assert_eq!(gate.running(), 2);
        assert!(gate.try_acquire("a", 3, 2).is_ok());
    }
}

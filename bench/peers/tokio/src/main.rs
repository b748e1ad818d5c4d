//! Tokio peer of troupe's benchmark workloads (/work/shared/BENCH.md).
//!
//! Usage: bench-tokio <pingpong|ring|skynet|fanin|ask|idle|big> <threads> [variant]
//!        bench-tokio variants <bench>
//!
//! Prints one line:
//!   bench=<name> impl=tokio variant=<v> threads=<t> n=<work units> seconds=<s> check=<checksum>
//! and exits non-zero when the checksum is wrong. `variants <bench>` lists the
//! variants of a workload, the default first (see README.md).
//!
//! Written against tokio 1.24 (Debian bookworm) and rustc >= 1.75 (traits returning `impl Future`).

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::error::SendError;
use tokio::sync::{mpsc, oneshot};

/// What a workload hands back: work units, checksum, optional extra field.
struct Outcome {
    n: u64,
    seconds: f64,
    check: u64,
    ok: bool,
    extra: String,
}

// ---------------------------------------------------------------- mailboxes

/// The two mailbox idioms a Tokio user picks from: an unbounded `mpsc` (a
/// send never waits: the fast choice where the workload cannot fill a
/// mailbox) and a bounded `mpsc::channel(bound)` (a send waits while it is
/// full). The workloads are generic over this trait and send with `put!`;
/// monomorphized, each send is the plain Tokio call, awaited or not as its
/// kind needs (no dispatch at run time).
trait Tx<T>: Clone + Send + Sync + 'static {
    type Rx: Rx<T>;
    /// A new channel; `bound` is ignored by the unbounded kind.
    fn channel(bound: usize) -> (Self, Self::Rx);
    /// Sends `v` if this kind's sends never wait: Ok(false) when the
    /// receiver is gone. A kind whose sends wait hands `v` back for `put`.
    fn put_now(&self, v: T) -> Result<bool, T>;
    /// Sends `v`, waiting while the channel is full: the kind's own send
    /// future (not wrapped, so nothing is added to it).
    fn put(&self, v: T) -> impl Future<Output = Result<(), SendError<T>>> + Send;
}

/// `put!(tx, v)`: sends `v` on a `Tx`, evaluating to false when the
/// receiver is gone. For the unbounded kind `put_now` always sends, so the
/// awaiting arm is dead code once inlined; for the bounded kind it is
/// `Sender::send(v).await` itself. Callgrind counts the same instructions
/// per pingpong round trip as the loops written directly with either kind
/// (awaiting a ready future for the unbounded send cost 13 more, and an
/// `async fn` wrapper around the bounded one 58 more).
macro_rules! put {
    ($tx:expr, $v:expr) => {
        match $tx.put_now($v) {
            Ok(sent) => sent,
            Err(v) => $tx.put(v).await.is_ok(),
        }
    };
}

trait Rx<T>: Send + 'static {
    /// The next message; None once every sender is gone.
    fn get(&mut self) -> impl Future<Output = Option<T>> + Send;
}

impl<T: Send + 'static> Tx<T> for mpsc::UnboundedSender<T> {
    type Rx = mpsc::UnboundedReceiver<T>;
    fn channel(_bound: usize) -> (Self, Self::Rx) {
        mpsc::unbounded_channel()
    }
    #[inline]
    fn put_now(&self, v: T) -> Result<bool, T> {
        Ok(self.send(v).is_ok())
    }
    // Never awaited: put_now always sends.
    fn put(&self, v: T) -> impl Future<Output = Result<(), SendError<T>>> + Send {
        std::future::ready(self.send(v))
    }
}

impl<T: Send + 'static> Rx<T> for mpsc::UnboundedReceiver<T> {
    #[inline]
    fn get(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
}

impl<T: Send + 'static> Tx<T> for mpsc::Sender<T> {
    type Rx = mpsc::Receiver<T>;
    fn channel(bound: usize) -> (Self, Self::Rx) {
        mpsc::channel(bound)
    }
    #[inline]
    fn put_now(&self, v: T) -> Result<bool, T> {
        Err(v)
    }
    #[inline]
    fn put(&self, v: T) -> impl Future<Output = Result<(), SendError<T>>> + Send {
        self.send(v)
    }
}

impl<T: Send + 'static> Rx<T> for mpsc::Receiver<T> {
    #[inline]
    fn get(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
}

// ---------------------------------------------------------------- pingpong

const ROUND_TRIPS: u64 = 1_000_000;

async fn pingpong<S: Tx<u64>>(bound: usize) -> Outcome {
    let start = Instant::now();
    let (to_b, mut b_inbox) = S::channel(bound);
    let (to_a, mut a_inbox) = S::channel(bound);

    // B: reply to every integer with the integer + 1.
    tokio::spawn(async move {
        while let Some(v) = b_inbox.get().await {
            if !put!(to_a, v + 1) {
                break;
            }
        }
    });

    // A: start at 0, send, await the reply, 1,000,000 times.
    let a = tokio::spawn(async move {
        let mut v = 0u64;
        for _ in 0..ROUND_TRIPS {
            assert!(put!(to_b, v), "B is gone");
            v = a_inbox.get().await.expect("B is gone");
        }
        v
    });

    let v = a.await.expect("A panicked");
    let seconds = start.elapsed().as_secs_f64();
    Outcome {
        n: 2 * ROUND_TRIPS,
        seconds,
        check: v,
        ok: v == ROUND_TRIPS,
        extra: String::new(),
    }
}

// ---------------------------------------------------------------- ring

const RING_SIZE: usize = 10_000;
const RING_TOKEN: u64 = 1_000_000;

async fn ring<S: Tx<u64>>(bound: usize) -> Outcome {
    let start = Instant::now();
    // Whoever holds the token when it reaches 0 reports (its index, hops).
    let (report_tx, mut report_rx) = mpsc::channel::<(usize, u64)>(1);

    // Actor i receives on inbox i and sends to inbox (i + 1) % RING_SIZE.
    let (inboxes_tx, inboxes_rx): (Vec<_>, Vec<_>) =
        (0..RING_SIZE).map(|_| S::channel(bound)).unzip();
    for (i, mut inbox) in inboxes_rx.into_iter().enumerate() {
        let next = inboxes_tx[(i + 1) % RING_SIZE].clone();
        let report = report_tx.clone();
        tokio::spawn(async move {
            while let Some(token) = inbox.get().await {
                if token == 0 {
                    let _ = report.send((i, RING_TOKEN - token)).await;
                    // Returning drops `next`; the ring then unwinds actor by
                    // actor as each inbox loses its only sender.
                    return;
                }
                if !put!(next, token - 1) {
                    return;
                }
            }
        });
    }
    drop(report_tx);

    assert!(put!(inboxes_tx[0], RING_TOKEN), "ring is gone");
    drop(inboxes_tx);
    let (index, hops) = report_rx.recv().await.unwrap_or((usize::MAX, 0));
    let seconds = start.elapsed().as_secs_f64();
    Outcome {
        n: RING_TOKEN,
        seconds,
        check: hops,
        ok: index == 0 && hops == RING_TOKEN,
        extra: String::new(),
    }
}

// ---------------------------------------------------------------- skynet

const SKYNET_LEAVES: u64 = 1_000_000;

/// Spawns one skynet node covering ordinals num..num+size; it sends its sum
/// to `parent`. A plain fn (not async) so the recursion needs no boxing.
fn skynet_node<S: Tx<u64>>(bound: usize, parent: S, num: u64, size: u64) {
    tokio::spawn(async move {
        if size == 1 {
            put!(parent, num);
            return;
        }
        let (tx, mut rx) = S::channel(bound);
        let child = size / 10;
        for i in 0..10 {
            skynet_node(bound, tx.clone(), num + i * child, child);
        }
        drop(tx);
        let mut sum = 0u64;
        for _ in 0..10 {
            sum += rx.get().await.expect("child vanished");
        }
        put!(parent, sum);
    });
}

async fn skynet<S: Tx<u64>>(bound: usize) -> Outcome {
    let start = Instant::now();
    let (tx, mut rx) = S::channel(bound);
    skynet_node(bound, tx, 0, SKYNET_LEAVES);
    let sum = rx.get().await.expect("root vanished");
    skynet_outcome(start, sum)
}

/// skynet's result: the root's sum, checked.
fn skynet_outcome(start: Instant, sum: u64) -> Outcome {
    let seconds = start.elapsed().as_secs_f64();
    let expect = SKYNET_LEAVES * (SKYNET_LEAVES - 1) / 2;
    Outcome {
        n: 1_111_111,
        seconds,
        check: sum,
        ok: sum == expect,
        extra: String::new(),
    }
}

/// The `join` variant: each node is a task whose result is its sum; a parent
/// spawns its 10 children and awaits their `JoinHandle`s, which carry the
/// replies (no channel to allocate).
fn skynet_join_node(num: u64, size: u64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        if size == 1 {
            return num;
        }
        let child = size / 10;
        let children: Vec<_> = (0..10)
            .map(|i| skynet_join_node(num + i * child, child))
            .collect();
        let mut sum = 0;
        for c in children {
            sum += c.await.expect("child panicked");
        }
        sum
    })
}

async fn skynet_join() -> Outcome {
    let start = Instant::now();
    let sum = skynet_join_node(0, SKYNET_LEAVES)
        .await
        .expect("root panicked");
    skynet_outcome(start, sum)
}

// ---------------------------------------------------------------- fanin

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 1_000_000;

async fn fanin() -> Outcome {
    let start = Instant::now();
    let (tx, mut rx) = mpsc::channel::<u64>(1024);

    let consumer = tokio::spawn(async move {
        let mut sum = 0u64;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    for _ in 0..PRODUCERS {
        let tx = tx.clone();
        tokio::spawn(async move {
            for v in 0..PER_PRODUCER {
                tx.send(v).await.expect("consumer is gone");
            }
        });
    }
    drop(tx);

    let sum = consumer.await.expect("consumer panicked");
    let seconds = start.elapsed().as_secs_f64();
    let expect = PRODUCERS * PER_PRODUCER * (PER_PRODUCER - 1) / 2;
    Outcome {
        n: PRODUCERS * PER_PRODUCER,
        seconds,
        check: sum,
        ok: sum == expect,
        extra: String::new(),
    }
}

// ---------------------------------------------------------------- ask

const ASKS: u64 = 1_000_000;

/// "Add 1 and reply with the new value."
#[derive(Debug)]
struct Increment {
    reply: oneshot::Sender<u64>,
}

async fn ask<S: Tx<Increment>>(bound: usize) -> Outcome {
    let start = Instant::now();
    let (server_tx, mut server_rx) = S::channel(bound);

    tokio::spawn(async move {
        let mut counter = 0u64;
        while let Some(Increment { reply }) = server_rx.get().await {
            counter += 1;
            let _ = reply.send(counter);
        }
    });

    let client = tokio::spawn(async move {
        let mut last = 0u64;
        for _ in 0..ASKS {
            let (reply, answer) = oneshot::channel();
            assert!(put!(server_tx, Increment { reply }), "server is gone");
            last = answer.await.expect("server dropped the reply");
        }
        last
    });

    let last = client.await.expect("client panicked");
    let seconds = start.elapsed().as_secs_f64();
    Outcome {
        n: ASKS,
        seconds,
        check: last,
        ok: last == ASKS,
        extra: String::new(),
    }
}

// ---------------------------------------------------------------- idle

const IDLE: usize = 1_000_000;

/// Resident set size in bytes, from VmRSS in /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            return kb * 1024;
        }
    }
    0
}

async fn idle() -> Outcome {
    let before = rss_bytes();
    let start = Instant::now();

    let waiting = Arc::new(AtomicUsize::new(0));
    let mut mailboxes = Vec::with_capacity(IDLE);
    let mut handles = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let (tx, rx) = oneshot::channel::<u64>();
        let waiting = waiting.clone();
        mailboxes.push(tx);
        handles.push(tokio::spawn(async move {
            waiting.fetch_add(1, Ordering::Relaxed);
            rx.await.unwrap_or(0)
        }));
    }
    // Let every task run up to its await, so all are really waiting.
    while waiting.load(Ordering::Relaxed) < IDLE {
        tokio::task::yield_now().await;
    }
    let after = rss_bytes();

    for tx in mailboxes {
        let _ = tx.send(1);
    }
    let mut ended = 0u64;
    for h in handles {
        ended += h.await.expect("idle task panicked");
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_actor = after.saturating_sub(before) / IDLE as u64;
    Outcome {
        n: IDLE as u64,
        seconds,
        check: ended,
        ok: ended == IDLE as u64,
        extra: format!(" bytes_per_actor={}", per_actor),
    }
}

// ---------------------------------------------------------------- big

const BIG_PAIRS: u64 = 1_000;
const BIG_ROUNDS: u64 = 4_000;

/// 1,000 independent pingpong pairs (as in pingpong: a mailbox each way)
/// of 4,000 round trips each, all started together: each A
/// awaits a oneshot "go" sent once every pair exists. The driver awaits
/// every A and sums their final values.
async fn big<S: Tx<u64>>(bound: usize) -> Outcome {
    let start = Instant::now();
    let mut gos = Vec::with_capacity(BIG_PAIRS as usize);
    let mut pings = Vec::with_capacity(BIG_PAIRS as usize);
    for _ in 0..BIG_PAIRS {
        let (to_b, mut b_inbox) = S::channel(bound);
        let (to_a, mut a_inbox) = S::channel(bound);
        let (go, started) = oneshot::channel::<()>();
        tokio::spawn(async move {
            while let Some(v) = b_inbox.get().await {
                if !put!(to_a, v + 1) {
                    break;
                }
            }
        });
        pings.push(tokio::spawn(async move {
            started.await.expect("driver is gone");
            let mut v = 0u64;
            for _ in 0..BIG_ROUNDS {
                assert!(put!(to_b, v), "B is gone");
                v = a_inbox.get().await.expect("B is gone");
            }
            v
        }));
        gos.push(go);
    }
    // Every pair exists: start them all.
    for go in gos {
        let _ = go.send(());
    }
    let mut sum = 0u64;
    for a in pings {
        sum += a.await.expect("A panicked");
    }
    let seconds = start.elapsed().as_secs_f64();
    Outcome {
        n: 2 * BIG_PAIRS * BIG_ROUNDS,
        seconds,
        check: sum,
        ok: sum == BIG_PAIRS * BIG_ROUNDS,
        extra: String::new(),
    }
}

// ---------------------------------------------------------------- main

const BENCHES: [&str; 7] = ["pingpong", "ring", "skynet", "fanin", "ask", "idle", "big"];

/// The variants of a workload, the default first. fanin needs its bound
/// (1024, from BENCH.md); idle's actors wait on a oneshot, the lightest
/// mailbox for one message; elsewhere no mailbox ever fills, so unbounded
/// is the idiom, and the bounded one is kept for comparison. skynet also
/// has `join`: replies as task results, awaited through `JoinHandle`s.
fn variants(bench: &str) -> &'static [&'static str] {
    match bench {
        "fanin" => &["bounded"],
        "idle" => &["oneshot"],
        "skynet" => &["unbounded", "bounded", "join"],
        _ => &["unbounded", "bounded"],
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench-tokio <{}> <threads> [variant]\n       bench-tokio variants <bench>",
        BENCHES.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "variants" && BENCHES.contains(&args[2].as_str()) {
        println!("{}", variants(&args[2]).join(" "));
        return ExitCode::SUCCESS;
    }
    if args.len() != 3 && args.len() != 4 {
        return usage();
    }
    let bench = args[1].as_str();
    let threads: usize = match args[2].parse() {
        Ok(t) if t >= 1 => t,
        _ => return usage(),
    };
    if !BENCHES.contains(&bench) {
        return usage();
    }
    let variant = args.get(3).map_or(variants(bench)[0], |v| v.as_str());
    if !variants(bench).contains(&variant) {
        return usage();
    }
    // The bounds of the bounded variant: 1 where a mailbox holds at most
    // one message at a time, 10 for a skynet parent's 10 children, a small
    // queue of requests for the ask server.
    let bounded = variant == "bounded";
    type U<T> = mpsc::UnboundedSender<T>;
    type B<T> = mpsc::Sender<T>;

    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .build()
    }
    .expect("cannot build the tokio runtime");

    let out = runtime.block_on(async {
        match bench {
            "pingpong" if bounded => pingpong::<B<_>>(1).await,
            "pingpong" => pingpong::<U<_>>(0).await,
            "ring" if bounded => ring::<B<_>>(1).await,
            "ring" => ring::<U<_>>(0).await,
            "skynet" if bounded => skynet::<B<_>>(10).await,
            "skynet" if variant == "join" => skynet_join().await,
            "skynet" => skynet::<U<_>>(0).await,
            "fanin" => fanin().await,
            "ask" if bounded => ask::<B<_>>(32).await,
            "ask" => ask::<U<_>>(0).await,
            "big" if bounded => big::<B<_>>(1).await,
            "big" => big::<U<_>>(0).await,
            _ => idle().await,
        }
    });

    println!(
        "bench={} impl=tokio variant={} threads={} n={} seconds={:.6} check={}{}",
        bench, variant, threads, out.n, out.seconds, out.check, out.extra
    );
    // Tasks still parked (ring stragglers) are dropped with the runtime.
    drop(runtime);
    if out.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench-tokio: {}: wrong checksum {}", bench, out.check);
        ExitCode::FAILURE
    }
}

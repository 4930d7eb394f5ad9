//! Worker threads for forwarded requests: reused while there is work, started on demand up
//! to the reactor's `max_active`, and gone after a quiet spell. Starting a thread per
//! request cost about 0.1 ms of latency on this machine (stack mapping and page faults in a
//! VM); a parked worker takes a task in microseconds.
//!
//! The hand-off has one invariant: `idle` counts idle workers that nobody has claimed. A
//! dispatcher claims one (decrements) before sending a task; a worker may only exit by
//! taking an unclaimed slot, so every task sent has a worker that will receive it.

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Task = Box<dyn FnOnce() + Send + 'static>;

pub struct WorkerPool {
    tx: Sender<Task>,
    rx: Arc<Mutex<Receiver<Task>>>,
    idle: Arc<Mutex<usize>>,
    linger: Duration,
    stack: usize,
    name: &'static str,
}

impl WorkerPool {
    /// Workers named `name` park for `linger` before exiting; each has a `stack`-byte stack.
    pub fn new(name: &'static str, linger: Duration, stack: usize) -> WorkerPool {
        let (tx, rx) = mpsc::channel();
        WorkerPool { tx, rx: Arc::new(Mutex::new(rx)), idle: Arc::new(Mutex::new(0)), linger, stack, name }
    }

    /// Run `task` on a parked worker, or on a new thread. A thread that cannot be started
    /// is an error (the task is dropped with it).
    pub fn run(&self, task: Task) -> io::Result<()> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if *idle > 0 {
                *idle -= 1;
                drop(idle);
                // The receiver lives as long as any worker; a send error means none is left,
                // which the claim above rules out. Fall through to a new thread regardless.
                match self.tx.send(task) {
                    Ok(()) => return Ok(()),
                    Err(mpsc::SendError(task)) => return self.spawn(task),
                }
            }
        }
        self.spawn(task)
    }

    /// A new worker thread, starting with `first`.
    fn spawn(&self, first: Task) -> io::Result<()> {
        let (rx, idle, linger) = (self.rx.clone(), self.idle.clone(), self.linger);
        std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack)
            .spawn(move || worker_loop(first, &rx, &idle, linger))
            .map(|_| ())
    }
}

/// Run tasks until none comes for `linger` (and an unclaimed idle slot can be taken) or the pool is gone.
fn worker_loop(first: Task, rx: &Mutex<Receiver<Task>>, idle: &Mutex<usize>, linger: Duration) {
    let mut task = first;
    loop {
        task();
        *idle.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(linger);
        task = match next {
            Ok(t) => t,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut n = idle.lock().unwrap_or_else(|e| e.into_inner());
                if *n > 0 {
                    *n -= 1;
                    return;
                }
                drop(n);
                // Every idle slot is claimed: a task is on its way to one of us.
                match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(t) => t,
                    Err(_) => return,
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Instant;

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim() == name)
            .count()
    }

    /// Wait (bounded) until `cond` holds; the bound only turns a hang into a failure.
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_parked_worker_takes_the_next_task_so_sequential_tasks_use_one_thread() {
        // A linger far longer than the test: no worker leaves by timing, whatever the load.
        let pool = WorkerPool::new("test-reuse", Duration::from_secs(600), 128 * 1024);
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..50 {
            let d = done.clone();
            pool.run(Box::new(move || {
                d.fetch_add(1, SeqCst);
            }))
            .unwrap();
            // The task ran and its worker parked again (an unclaimed idle slot).
            wait_until("the task ran and its worker parked", || {
                done.load(SeqCst) == i + 1 && *pool.idle.lock().unwrap() == 1
            });
        }
        assert_eq!(threads_named("test-reuse"), 1, "every task after the first went to the parked worker");
        // The pool gone, its parked worker leaves at once (the channel is closed).
        drop(pool);
        wait_until("the parked worker left with its pool", || threads_named("test-reuse") == 0);
    }

    #[test]
    fn every_task_runs_and_idle_workers_leave() {
        let pool = WorkerPool::new("test-worker", Duration::from_millis(300), 128 * 1024);
        let done = Arc::new(AtomicUsize::new(0));
        for round in 0..50 {
            let d = done.clone();
            pool.run(Box::new(move || {
                d.fetch_add(1, SeqCst);
            }))
            .unwrap();
            if round % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(SeqCst) < 50 {
            assert!(Instant::now() < deadline, "only {} of 50 tasks ran", done.load(SeqCst));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Tasks sent while workers time out are never lost.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(290));
            let d = done.clone();
            pool.run(Box::new(move || {
                d.fetch_add(1, SeqCst);
            }))
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.load(SeqCst) < 70 {
            assert!(Instant::now() < deadline, "a task was lost: {} of 70 ran", done.load(SeqCst));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Quiet: the workers leave.
        let deadline = Instant::now() + Duration::from_secs(30);
        while threads_named("test-worker") > 0 {
            assert!(Instant::now() < deadline, "idle workers did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

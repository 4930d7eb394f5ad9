//! Children's output pipes: read without blocking, split into lines, and deliver each line to
//! its sink (the log, the event queue, or a [`Supervisor::run`] helper's captured output).

use super::{Event, MAX_QUEUED_LINES, RUN_OUTPUT_CAP, Sink, Stream, Supervisor, output};
use nix::errno::Errno;

/// Bytes read from one pipe per loop turn, so a chatty child cannot starve the rest.
pub(super) const PIPE_READ_BUDGET: usize = 64 * 1024;

impl Supervisor {
    /// A pipe is readable (or at end of file).
    pub(super) fn on_pipe(&mut self, id: u64) {
        if self.read_pipe(id, PIPE_READ_BUDGET) {
            self.close_pipe(id);
        }
    }

    /// The child of this pipe exited: take what is there now; if a grandchild still holds the
    /// pipe (a container started by `runc create`), keep reading it after all. Event lines stay
    /// events, still naming the exited child as their source (the caller that asked for events
    /// keeps them: the appliance's output ring); collected output has no one left to collect
    /// it and is logged under the same name.
    pub(super) fn drain_after_exit(&mut self, id: u64) {
        if self.read_pipe(id, 4 * PIPE_READ_BUDGET) {
            return self.close_pipe(id);
        }
        let Some(i) = self.pipes.iter().position(|p| p.id == id) else { return };
        if self.pipes[i].sink == Sink::Events {
            return;
        }
        let rest = self.pipes[i].buf.finish();
        self.deliver(i, rest.into_iter().collect());
        self.pipes[i].pid = None;
        self.pipes[i].sink = Sink::Log;
    }

    /// Read up to `budget` bytes; true at end of file (or a read error).
    pub(super) fn read_pipe(&mut self, id: u64, budget: usize) -> bool {
        let Some(i) = self.pipes.iter().position(|p| p.id == id) else { return false };
        let mut chunk = [0u8; 16 * 1024];
        let mut total = 0;
        while total < budget {
            match nix::unistd::read(&self.pipes[i].fd, &mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    total += n;
                    let lines = self.pipes[i].buf.push(&chunk[..n]);
                    self.deliver(i, lines);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return false,
                Err(e) => {
                    log::warn!("read output of {}: {}", self.pipes[i].name, e.desc());
                    return true;
                }
            }
        }
        false
    }

    /// End of file: deliver the unterminated rest as a last line and close the pipe.
    pub(super) fn close_pipe(&mut self, id: u64) {
        let Some(i) = self.pipes.iter().position(|p| p.id == id) else { return };
        let rest = self.pipes[i].buf.finish();
        self.deliver(i, rest.into_iter().collect());
        self.pipes.swap_remove(i);
    }

    /// Hand lines of pipe `i` to its sink; the event queue keeps at most [`MAX_QUEUED_LINES`].
    pub(super) fn deliver(&mut self, i: usize, lines: Vec<String>) {
        let p = &self.pipes[i];
        for line in lines {
            match (p.sink, p.pid) {
                (Sink::Collect, Some(pid)) => {
                    if let Some(c) = self.children.get_mut(&pid) {
                        let buf = if p.stream == Stream::Stdout { &mut c.stdout } else { &mut c.stderr };
                        output::push_bounded(buf, &line, RUN_OUTPUT_CAP);
                    }
                }
                (Sink::Events, Some(pid)) => {
                    if self.queued_lines >= MAX_QUEUED_LINES {
                        if let Some(i) = self.events.iter().position(|e| matches!(e, Event::Line { .. })) {
                            self.events.remove(i);
                            self.queued_lines -= 1;
                        }
                        if self.dropped_lines == 0 {
                            log::warn!("output lines are not being taken: dropping the oldest");
                        }
                        self.dropped_lines += 1;
                    }
                    self.queued_lines += 1;
                    self.events.push_back(Event::Line { pid, name: p.name.clone(), stream: p.stream, line });
                }
                _ => log::info!("{}: {line}", p.name),
            }
        }
    }
}

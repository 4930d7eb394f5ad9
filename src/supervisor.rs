//! The single reaper and event loop: signalfd + sockets + timers in one `poll()`, children
//! with a clean signal mask, restart with exponential backoff. Issue #3.

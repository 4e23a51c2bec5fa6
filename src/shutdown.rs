//! How a run ends: the signals that start it, and the tokens each stage of the shutdown
//! cancels, under one name each across the crate.
//!
//! SIGTERM and SIGINT both mean "drain and stop" (a container runtime sends SIGTERM, a terminal
//! SIGINT). A second signal during the drain means "stop now": the process exits at once with
//! 130.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit code when a second signal cuts the drain short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// The stages of a shutdown, in the order they fire (the sequence is in `app::run`).
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// The drain has begun: readiness turns false, new sessions are refused, and workers that
    /// exit are not restarted.
    pub shutdown: CancellationToken,
    /// The client and peer listeners stop accepting; open connections finish their request in
    /// flight and close.
    pub stop_accepting: CancellationToken,
    /// Workers and every background task stop.
    pub stop_workers: CancellationToken,
    /// The admin listener stops, last, so that probes see the drain.
    pub stop_admin: CancellationToken,
}

impl Lifecycle {
    /// The stages of a run whose drain begins when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Lifecycle {
            shutdown,
            ..Lifecycle::default()
        }
    }
}

/// A token cancelled by the first SIGTERM or SIGINT.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested; draining"),
            _ = int.recv() => info!(signal = "SIGINT", "shutdown requested; draining"),
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal; exiting without waiting for the drain");
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}

/// Runs `f` at once and then every `period` until `stop`: the file watchers' loop. A tick
/// missed while `f` ran is not made up.
pub async fn every(period: std::time::Duration, stop: CancellationToken, mut f: impl FnMut()) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        f();
    }
}

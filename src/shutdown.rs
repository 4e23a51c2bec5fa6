//! Turns SIGTERM and SIGINT into a cancellation the whole gateway watches.
//!
//! Both signals mean "drain and stop" (a container runtime sends SIGTERM, a terminal SIGINT). A
//! second signal during the drain means "stop now": the process exits at once with 130.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit code when a second signal cuts the drain short.
pub const FORCED_EXIT_CODE: i32 = 130;

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

//! Ends the open sessions of static tokens taken out of the tokens file or given another role,
//! whether or not they send another request: a revoked session that only waited kept its
//! worker from other principals until it idled out (6 h), and came back if its token did (a
//! thirty-third review). A session's request is refused at once too (`proxy::session`); this
//! ends the rest within a reload.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::static_tokens::{StaticTokens, RELOAD_INTERVAL};
use crate::sessions::end::SessionEnder;

/// What the sweep reads and ends sessions with.
#[derive(Debug, Clone)]
pub struct RevokedSweep {
    pub ender: SessionEnder,
    pub tokens: Arc<StaticTokens>,
}

impl RevokedSweep {
    /// Sweeps after each change of the tokens in force, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut seen = self.tokens.generation();
        crate::shutdown::every(RELOAD_INTERVAL, stop, || {
            let now = self.tokens.generation();
            if now != seen {
                seen = now;
                self.sweep();
            }
        })
        .await;
    }

    /// Ends every session of this node whose static token is no longer in force as it was.
    pub fn sweep(&self) {
        let ended: Vec<Box<[u8]>> = self
            .ender
            .sessions
            .ids()
            .into_iter()
            .filter(|id| {
                self.ender.ids.verify(id).is_ok_and(|route| {
                    route.grant.expires_at.is_none()
                        && !self
                            .tokens
                            .principal_known(route.grant.principal_tag, route.grant.access)
                })
            })
            .collect();
        if ended.is_empty() {
            return;
        }
        info!(
            ended = ended.len(),
            "ending the sessions of revoked static tokens"
        );
        for id in ended {
            self.ender.end(id, "revoked");
        }
    }
}

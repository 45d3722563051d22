//! Background upkeep of the queue. Each loop: a `XxxConfig`, `run_once()` that tests call too,
//! and `run(shutdown)` that ticks it. Several instances may run them at once: the rescuer's rows
//! are claimed with SKIP LOCKED, and the pruner runs only where it wins an advisory lock.

mod pruner;
mod quota;
mod rescuer;

pub use pruner::{Pruner, PrunerConfig};
pub use quota::{QuotaRefresher, REFRESH_PRIORITY};
pub use rescuer::{Rescuer, RescuerConfig};

use std::future::Future;
use std::time::Duration;

use crate::shutdown::Shutdown;

/// Calls `tick` every `interval` (jittered ±10 %) until shutdown begins.
async fn every<F, Fut>(interval: Duration, shutdown: Shutdown, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let pause = interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
        tokio::select! {
            _ = shutdown.stopping() => return,
            _ = tokio::time::sleep(pause) => tick().await,
        }
    }
}

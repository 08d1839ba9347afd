//! Wake-ups across coordinators: a transition that queues a task notifies
//! [`WORK_CHANNEL`] (with its soft-state write, after its commit: `sched.rs`), and every
//! coordinator listens on a connection of its own, so a worker long-polling one
//! coordinator leases work queued through another at once rather than at its next
//! re-check.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::NoTls;

use crate::coordinator::store::WorkListener;

/// The channel of "a task was queued" notifications.
pub(super) const WORK_CHANNEL: &str = "kura_work";

/// How often the listener looks whether its coordinator is still there, and how long
/// it waits before connecting again after losing its connection (a database restart or
/// failover: a listener with no connection costs only the 1 s re-check of long polls).
const LISTEN_TICK: Duration = Duration::from_secs(1);

/// Most waiters one notification wakes (a notification says how many tasks were queued;
/// a 10,000-object batch does not wake more than a coordinator's workers could be).
const MAX_WAKE: u32 = 1024;

/// Listens on [`WORK_CHANNEL`] on a thread of its own until `to.work` is dropped.
pub(super) fn spawn(config: postgres::Config, to: WorkListener) {
    let spawned = std::thread::Builder::new()
        .name("kura-pg-listen".into())
        .spawn(move || run(&config, &to));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no listener for other coordinators' work");
    }
}

fn run(config: &postgres::Config, to: &WorkListener) {
    while to.work.strong_count() > 0 {
        let listening = config.connect(NoTls).and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {WORK_CHANNEL}"))?;
            Ok(c)
        });
        let mut client = match listening {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "listening for work: cannot connect");
                std::thread::sleep(LISTEN_TICK);
                continue;
            }
        };
        to.listening.set(1);
        // Work may have been queued while no connection listened: every waiter looks.
        if let Some(w) = to.work.upgrade() {
            w.notify_waiters();
        }
        let outcome = listen(&mut client, to);
        to.listening.set(0);
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "listening for work: connection lost");
        }
    }
}

/// Wakes the waiters for each notification until the connection fails or they are gone.
fn listen(client: &mut postgres::Client, to: &WorkListener) -> Result<(), postgres::Error> {
    loop {
        // A new iterator each time: an iterator's timeout runs once, from its creation.
        let got = client.notifications().timeout_iter(LISTEN_TICK).next()?;
        let Some(w) = to.work.upgrade() else {
            return Ok(());
        };
        if let Some(n) = got {
            // As many waiters as tasks were queued, not all of them: a coordinator of a
            // big fleet has hundreds waiting, each of which would try a lease.
            let queued = n.payload().parse().unwrap_or(1).min(MAX_WAKE);
            to.wakeups.inc();
            for _ in 0..queued {
                w.notify_one();
            }
        }
    }
}

//! Lets a checkout request wait for its order's saga to finish, woken by the bus handler that
//! commits the final state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// One request's wait for an order; dropping it takes the registration back.
pub struct Waiting {
    woken: oneshot::Receiver<()>,
    waiters: Arc<Waiters>,
    order_id: String,
}

impl Waiting {
    /// Resolves when the order's saga has finished (or the process is shutting down).
    pub async fn finished(&mut self) {
        let _ = (&mut self.woken).await;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.woken.close();
        self.waiters.forget(&self.order_id);
    }
}

impl Waiters {
    /// Register before the order can possibly finish (before the transaction that places it
    /// commits, or before looking at its status), then wait on the answer.
    pub fn register(self: &Arc<Self>, order_id: &str) -> Waiting {
        let (tx, woken) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiters lock")
            .entry(order_id.to_string())
            .or_default()
            .push(tx);
        Waiting {
            woken,
            waiters: self.clone(),
            order_id: order_id.to_string(),
        }
    }

    pub fn wake(&self, order_id: &str) {
        let senders = self.waiting.lock().expect("waiters lock").remove(order_id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Drops the registrations of requests that stopped waiting.
    fn forget(&self, order_id: &str) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if let Some(list) = waiting.get_mut(order_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiting.remove(order_id);
            }
        }
    }
}

//! Lets a checkout request wait for its order's saga to finish, woken by the bus handler that
//! commits the final state.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// Register before the order can possibly finish, then await the receiver.
    pub fn register(&self, order_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiters lock")
            .entry(order_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    pub fn wake(&self, order_id: &str) {
        let senders = self.waiting.lock().expect("waiters lock").remove(order_id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Drops the registration of a request that stopped waiting.
    pub fn forget(&self, order_id: &str) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if let Some(list) = waiting.get_mut(order_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiting.remove(order_id);
            }
        }
    }
}

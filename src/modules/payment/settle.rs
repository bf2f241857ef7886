//! Where the payment provider is asked: outside every database transaction. A provider is a
//! remote service that may be slow or down, and a transaction held open across its call would
//! hold the module's writer (or a connection and its locks) for as long.
//!
//! So a payment goes in three steps. The consumer's transaction records the intent (a
//! `pending` payment, with the event that asked for it marked handled); after it commits, the
//! [`Settler`] asks the provider, keyed by the payment's id; then a transaction of its own
//! records the answer and, in the outbox, the event that tells the order. A refund goes the
//! same way (`refunding`, ask, `refunded`). If the process dies between asking and recording,
//! the payment is still unsettled when it starts again: it is asked again with the same key,
//! and the provider, idempotent per key, answers what it answered the first time. If two
//! instances ask, the first to record wins and the other records nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::events::{self as payment_events, PaymentFailed, PaymentRefunded, PaymentSucceeded};
use super::provider::{Charge, Outcome, PaymentProvider, Refund, Unanswered};
use super::store::{Payment, PaymentStore};
use crate::bus::{outbox, topics, Event};
use crate::db::{now_ms, Uow};

/// Provider calls in flight at once.
const CONCURRENT_CALLS: usize = 16;
/// Payments settled in one transaction at most.
const BATCH: usize = 256;
/// The wait before asking again about a payment the provider did not answer, doubled per
/// attempt up to [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// Hands unsettled payments to the task that asks the provider about them.
#[derive(Clone)]
pub struct Settler {
    queue: mpsc::UnboundedSender<Attempt>,
}

/// A payment to ask the provider about, and how many times it was asked before.
struct Attempt {
    payment: Payment,
    tries: u32,
}

/// What the provider answered.
enum Answer {
    Charged(Outcome),
    Refunded(String),
}

impl Settler {
    /// Starts the task that asks `provider` and records its answers through `store`, beginning
    /// with whatever an earlier run of the module left unsettled.
    pub fn start(store: PaymentStore, provider: Arc<dyn PaymentProvider>) -> Settler {
        let (queue, asked) = mpsc::unbounded_channel();
        let settler = Settler { queue };
        tokio::spawn(run(store, provider, asked, settler.clone()));
        settler
    }

    /// Asks the provider about `payments` (each `pending` or `refunding`, committed).
    pub fn settle(&self, payments: Vec<Payment>) {
        for payment in payments {
            self.again(Attempt { payment, tries: 0 });
        }
    }

    fn again(&self, attempt: Attempt) {
        // Closed only when the task has ended with the runtime: the payment stays unsettled in
        // the database and is taken up at the next start.
        let _ = self.queue.send(attempt);
    }

    /// Asks again after a pause that grows with each try.
    fn later(&self, mut attempt: Attempt) {
        let pause = FIRST_BACKOFF
            .saturating_mul(1 << attempt.tries.min(16))
            .min(MOST_BACKOFF);
        attempt.tries += 1;
        let settler = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            settler.again(attempt);
        });
    }
}

async fn run(
    store: PaymentStore,
    provider: Arc<dyn PaymentProvider>,
    mut asked: mpsc::UnboundedReceiver<Attempt>,
    settler: Settler,
) {
    recover(&store, &settler).await;
    while let Some(first) = asked.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match asked.try_recv() {
                // A payment queued twice (by its consumer and by the recovery at start) is
                // asked once per batch: one answer, one event.
                Ok(attempt) if batch.iter().any(|a| a.payment.id == attempt.payment.id) => {}
                Ok(attempt) => batch.push(attempt),
                Err(_) => break,
            }
        }
        let answers: Vec<(Attempt, Result<Answer, Unanswered>)> = futures::stream::iter(batch)
            .map(|attempt| {
                let provider = provider.clone();
                async move {
                    let answer = ask(provider.as_ref(), &attempt.payment).await;
                    (attempt, answer)
                }
            })
            // In the order asked, so outcomes reach the outbox in that order too.
            .buffered(CONCURRENT_CALLS)
            .collect()
            .await;
        let mut answered = Vec::with_capacity(answers.len());
        for (attempt, answer) in answers {
            match answer {
                Ok(answer) => answered.push((attempt, answer)),
                Err(why) => {
                    tracing::warn!(payment = %attempt.payment.id, tries = attempt.tries + 1,
                        error = %why, "the payment provider did not answer; asking again later");
                    metrics::counter!("ekart_payment_provider_unanswered_total").increment(1);
                    settler.later(attempt);
                }
            }
        }
        if answered.is_empty() {
            continue;
        }
        // Shared with the write rather than copied for it: on failure the same payments are
        // asked about again.
        let records: Arc<Vec<(Payment, Answer)>> = Arc::new(
            answered
                .into_iter()
                .map(|(attempt, answer)| (attempt.payment, answer))
                .collect(),
        );
        let written = records.clone();
        let result = store
            .db
            .write(move |uow| Box::pin(async move { record(uow, &written).await }))
            .await;
        if let Err(e) = result {
            // The provider answered but the answers are not recorded: the payments are still
            // unsettled in the database, and asking again with the same keys is harmless.
            tracing::error!(error = %e, "cannot record the payment provider's answers; asking again");
            for (payment, _) in records.iter() {
                settler.later(Attempt {
                    payment: payment.clone(),
                    tries: 1,
                });
            }
        }
    }
}

/// Takes up what an earlier run left unsettled, trying until the database answers.
async fn recover(store: &PaymentStore, settler: &Settler) {
    let mut pause = FIRST_BACKOFF;
    loop {
        match store.unsettled().await {
            Ok(left) => {
                if !left.is_empty() {
                    tracing::info!(
                        payments = left.len(),
                        "settling payments an earlier run left"
                    );
                }
                settler.settle(left);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the unsettled payments; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MOST_BACKOFF);
            }
        }
    }
}

/// Asks the provider to do what `payment`'s state says is wanted, keyed by its id, under a
/// span of the payment's trace.
async fn ask(provider: &dyn PaymentProvider, payment: &Payment) -> Result<Answer, Unanswered> {
    use crate::telemetry::spans::{Kind, Span};
    use crate::telemetry::trace::TraceContext;
    let parent = payment.traceparent.as_deref().and_then(TraceContext::parse);
    let mut span = parent.map(|parent| {
        Span::start(
            Kind::Client,
            parent.child(),
            Some(parent),
            || match payment.status.as_str() {
                "refunding" => "payment provider refund",
                _ => "payment provider charge",
            },
        )
    });
    let answer = ask_provider(provider, payment).await;
    if let Some(span) = span.as_mut().filter(|s| s.is_recording()) {
        span.tag(
            "payment.outcome",
            if answer.is_ok() {
                "answered"
            } else {
                "unanswered"
            },
        );
    }
    answer
}

async fn ask_provider(
    provider: &dyn PaymentProvider,
    payment: &Payment,
) -> Result<Answer, Unanswered> {
    match payment.status.as_str() {
        "refunding" => provider
            .refund(&Refund {
                key: &payment.id,
                reference: &payment.reference,
                amount_minor: payment.amount_minor,
            })
            .await
            .map(Answer::Refunded),
        _ => {
            let Some(method) = &payment.method else {
                return Err(Unanswered("the payment has no method to charge".into()));
            };
            provider
                .charge(&Charge {
                    key: &payment.id,
                    order_id: &payment.order_id,
                    amount_minor: payment.amount_minor,
                    currency: &payment.currency,
                    method,
                })
                .await
                .map(Answer::Charged)
        }
    }
}

/// Records the answers, and in the outbox the events that tell the orders: one per answer
/// recorded now, none for an answer recorded before (another instance asked too).
async fn record(uow: &mut Uow, records: &[(Payment, Answer)]) -> Result<(), sqlx::Error> {
    let charges: Vec<(&str, &Outcome)> = records
        .iter()
        .filter_map(|(payment, answer)| match answer {
            Answer::Charged(outcome) => Some((payment.id.as_str(), outcome)),
            Answer::Refunded(_) => None,
        })
        .collect();
    let charged = PaymentStore::settle_charges(uow, &charges).await?;
    let mut events = Vec::with_capacity(records.len());
    for (payment, answer) in records {
        let order_id = payment.order_id.as_str();
        let event = match answer {
            Answer::Charged(_) if !charged.contains(&payment.id) => continue,
            Answer::Charged(Outcome::Approved { reference }) => Event::new(
                payment_events::SOURCE,
                payment_events::SUCCEEDED,
                order_id,
                PaymentSucceeded {
                    order_id: order_id.into(),
                    payment_id: payment.id.clone(),
                    reference: reference.clone(),
                    amount_minor: payment.amount_minor,
                    currency: payment.currency.clone(),
                },
            ),
            Answer::Charged(Outcome::Declined { code, reason }) => Event::new(
                payment_events::SOURCE,
                payment_events::FAILED,
                order_id,
                PaymentFailed {
                    order_id: order_id.into(),
                    payment_id: payment.id.clone(),
                    code: code.clone(),
                    reason: reason.clone(),
                },
            ),
            Answer::Refunded(refund_reference) => {
                let at = now_ms();
                if !PaymentStore::settle_refund(uow, &payment.id, refund_reference, at).await? {
                    continue;
                }
                Event::new(
                    payment_events::SOURCE,
                    payment_events::REFUNDED,
                    order_id,
                    PaymentRefunded {
                        order_id: order_id.into(),
                        payment_id: payment.id.clone(),
                        refund_reference: refund_reference.clone(),
                        amount_minor: payment.amount_minor,
                    },
                )
            }
        };
        events.push(event.continuing(payment.traceparent.as_deref()));
    }
    outbox::push_all(uow, topics::PAYMENT, &events).await
}

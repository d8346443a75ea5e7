//! A binder that injects faults on cue: [`FaultyBinder`] wraps any binder
//! (memory, RabbitMQ, Kafka) and delegates everything to it, except what the
//! test told its [`Faults`] to break.
//!
//! Each fault targets sites chosen by [`To`] (a destination, dead-letter
//! bindings, or anything) and lasts for [`Times`] (the next N matching
//! operations, or until cleared). The first matching fault of a kind wins.
//! Every send, confirm, ack and nack is counted, per destination and in
//! total, so a test can assert what the runtime did.
//!
//! ```
//! use std::time::Duration;
//! use bindery::BinderErrorKind;
//! use bindery::binder::{Binder, BinderExt, ProducerSpec};
//! use bindery::memory::MemoryBinder;
//! use bindery::Message;
//! use bytes::Bytes;
//! use bindery_testkit::fault::{Faults, FaultyBinder, Times, To};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let faults = Faults::new();
//! let binder = FaultyBinder::wrap(MemoryBinder::isolated(), &faults);
//! let spec = ProducerSpec::new("out-0", "out").required_groups(["g"]);
//! let producer = binder.producer(&spec).await.unwrap();
//!
//! faults.fail_confirms(To::destination("out"), Times::Next(1), BinderErrorKind::Rejected);
//! let confirm = producer.send(Message::new(Bytes::from_static(b"one"))).await.unwrap();
//! assert_eq!(confirm.await.unwrap_err().kind(), BinderErrorKind::Rejected);
//! producer.send(Message::new(Bytes::from_static(b"two"))).await.unwrap().await.unwrap();
//!
//! faults.lose_connection();
//! assert!(!binder.health().is_up());
//! faults.restore_connection();
//!
//! assert_eq!(faults.stats_of("out").sends, 2);
//! assert_eq!(faults.stats().confirms_failed, 1);
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery::binder::{
    Acknowledger, Binder, Capabilities, Confirmation, ConsumeFrom, Consumer, Delivery,
    DeliveryHandle, GroupBinding, Health, Producer, PublishTo,
};
use bindery::{BinderError, BinderErrorKind, DeliveryId, Headers, Message};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;

/// The reason [`Health::Down`] gives while the connection is lost.
const LOST: &str = "connection lost (fault injected by bindery-testkit)";

/// Which operations a fault applies to.
///
/// The destination of an operation is the one it works on: the spec's
/// destination for consumers, producers and redrive producers, and the
/// dead-letter destination ([`Binder::dead_letter_name`]) for
/// dead-letter producers and consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct To {
    destination: Option<String>,
    dead_letters_only: bool,
}

impl To {
    /// Every operation of the kind the fault names.
    pub fn any() -> Self {
        Self {
            destination: None,
            dead_letters_only: false,
        }
    }

    /// Operations on destination `name` only.
    pub fn destination(name: impl Into<String>) -> Self {
        Self {
            destination: Some(name.into()),
            dead_letters_only: false,
        }
    }

    /// Dead-letter bindings only: producers to [`PublishTo::DeadLetters`]
    /// and consumers of [`ConsumeFrom::DeadLetters`].
    pub fn dead_letters() -> Self {
        Self {
            destination: None,
            dead_letters_only: true,
        }
    }

    fn matches(&self, site: &Site) -> bool {
        (!self.dead_letters_only || site.dead_letters)
            && self
                .destination
                .as_deref()
                .is_none_or(|name| name == &*site.destination)
    }
}

/// How long a fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// The next this many matching operations, then the fault is gone.
    Next(u32),
    /// Every matching operation until [`Faults::clear`].
    Always,
}

/// Which bind call a bind fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// [`Binder::bind_consumer`] of [`ConsumeFrom::Destination`].
    Consumer,
    /// [`Binder::bind_producer`] of [`PublishTo::Destination`].
    Producer,
    /// [`Binder::bind_producer`] of [`PublishTo::DeadLetters`].
    DeadLetterProducer,
    /// [`Binder::bind_consumer`] of [`ConsumeFrom::DeadLetters`].
    DeadLetterConsumer,
    /// [`Binder::bind_producer`] of [`PublishTo::Group`] (redrive).
    RedriveProducer,
    /// Every bind call above.
    Any,
}

impl Bind {
    fn covers(self, call: Bind) -> bool {
        self == Bind::Any || self == call
    }
}

/// The error an injected fault returns: a kind, and optionally the message
/// a test wants to find in the app's error. A bare [`BinderErrorKind`]
/// converts into one with a message naming the fault and its site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    kind: BinderErrorKind,
    message: Option<String>,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: BinderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: Some(message.into()),
        }
    }

    fn error(&self, what: &str, site: &Site) -> BinderError {
        let message = self.message.clone().unwrap_or_else(|| {
            format!(
                "{what} of `{}` failed (fault injected by bindery-testkit)",
                site.destination
            )
        });
        BinderError::new(self.kind, message)
    }
}

impl From<BinderErrorKind> for Failure {
    fn from(kind: BinderErrorKind) -> Self {
        Self {
            kind,
            message: None,
        }
    }
}

/// What [`FaultyBinder`] observed, in total ([`Faults::stats`]) or for one
/// destination ([`Faults::stats_of`]). Failures count whether injected or
/// returned by the wrapped binder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Bind calls that returned an error.
    pub binds_failed: u64,
    /// `Producer::send` calls.
    pub sends: u64,
    /// Sends that returned an error.
    pub sends_failed: u64,
    /// Confirmations that completed with an error.
    pub confirms_failed: u64,
    /// Confirmations held back by [`Faults::delay_confirms`].
    pub confirms_delayed: u64,
    /// `ack` calls on deliveries.
    pub acks: u64,
    /// `nack(true)` calls on deliveries.
    pub nacks_requeued: u64,
    /// `nack(false)` calls on deliveries.
    pub nacks_without_requeue: u64,
    /// Receives that panicked on cue.
    pub panics: u64,
}

impl FaultStats {
    fn add(&mut self, other: &FaultStats) {
        self.binds_failed += other.binds_failed;
        self.sends += other.sends;
        self.sends_failed += other.sends_failed;
        self.confirms_failed += other.confirms_failed;
        self.confirms_delayed += other.confirms_delayed;
        self.acks += other.acks;
        self.nacks_requeued += other.nacks_requeued;
        self.nacks_without_requeue += other.nacks_without_requeue;
        self.panics += other.panics;
    }
}

/// The cues and counters shared by a test and its [`FaultyBinder`]s.
/// Cloning shares them.
#[derive(Clone, Default)]
pub struct Faults {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// `Some(reason)` while the connection is lost; a watch so that waiting
    /// consumers resume the moment it comes back.
    lost: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    stats: BTreeMap<String, FaultStats>,
}

struct Rule {
    fault: Fault,
    to: To,
    remaining: Option<u32>,
}

enum Fault {
    Bind(Bind, Failure),
    Send(Failure),
    Confirm(Failure),
    DelayConfirm(Duration),
    Panic,
}

/// Where an operation happens.
struct Site {
    destination: Arc<str>,
    dead_letters: bool,
}

impl Faults {
    /// No faults, connection up, counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes bind calls of kind `bind` fail with `failure`. A transient
    /// kind (`Connection`, `Timeout`) is what a broker that is not up yet
    /// returns; the runtime retries it. Other kinds stop the app.
    pub fn fail_binds(&self, bind: Bind, to: To, times: Times, failure: impl Into<Failure>) {
        self.add(Fault::Bind(bind, failure.into()), to, times);
    }

    /// Makes `Producer::send` return `Err(failure)`; the message is not
    /// passed on.
    pub fn fail_sends(&self, to: To, times: Times, failure: impl Into<Failure>) {
        self.add(Fault::Send(failure.into()), to, times);
    }

    /// Makes sends succeed but their [`Confirmation`] complete with
    /// `Err(failure)`, as a broker's negative confirm. The message is not
    /// passed on: a broker that nacks a publish has not routed it.
    pub fn fail_confirms(&self, to: To, times: Times, failure: impl Into<Failure>) {
        self.add(Fault::Confirm(failure.into()), to, times);
    }

    /// Keeps the confirmations of sends pending for `delay` after the send
    /// (on tokio's clock, so paused time advances it). The message itself is
    /// passed on at once.
    pub fn delay_confirms(&self, to: To, times: Times, delay: Duration) {
        self.add(Fault::DelayConfirm(delay), to, times);
    }

    /// Makes dead-letter publishes fail: sends to producers bound to
    /// [`PublishTo::DeadLetters`] are accepted but their
    /// confirmation fails with `failure`, and the dead letter is not stored.
    /// Shorthand for `fail_confirms(To::dead_letters(), ..)`; use
    /// [`fail_sends`](Self::fail_sends) with [`To::dead_letters`] to fail
    /// the send itself.
    pub fn fail_dead_letters(&self, times: Times, failure: impl Into<Failure>) {
        self.fail_confirms(To::dead_letters(), times, failure);
    }

    /// Makes the next receive (`recv` or `try_recv`) of matching consumers
    /// panic, as a broken client would, to test that the runtime notices a
    /// binding task that dies.
    pub fn panic_on_receive(&self, to: To, times: Times) {
        self.add(Fault::Panic, to, times);
    }

    /// Loses the connection: [`Binder::health`] is down, binds and sends
    /// fail with [`BinderErrorKind::Connection`], and consumers deliver
    /// nothing (they wait; the messages stay with the wrapped binder, and
    /// one that arrives as the connection goes is requeued there) until
    /// [`restore_connection`](Self::restore_connection). Settling
    /// deliveries handed out before is passed on unchanged.
    pub fn lose_connection(&self) {
        self.shared.lost.send_replace(Some(LOST.to_owned()));
    }

    /// Brings the connection back: consumers resume where they were.
    pub fn restore_connection(&self) {
        self.shared.lost.send_replace(None);
    }

    /// Whether the connection is up (not lost by
    /// [`lose_connection`](Self::lose_connection)).
    pub fn is_connected(&self) -> bool {
        self.shared.lost.borrow().is_none()
    }

    /// Removes every fault and restores the connection; counters stay.
    pub fn clear(&self) {
        self.shared.state.lock().rules.clear();
        self.restore_connection();
    }

    /// The counters summed over every destination.
    pub fn stats(&self) -> FaultStats {
        let state = self.shared.state.lock();
        let mut total = FaultStats::default();
        for stats in state.stats.values() {
            total.add(stats);
        }
        total
    }

    /// The counters of destination `name` (zero if never used).
    pub fn stats_of(&self, name: &str) -> FaultStats {
        self.shared
            .state
            .lock()
            .stats
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    fn add(&self, fault: Fault, to: To, times: Times) {
        let remaining = match times {
            Times::Next(0) => return,
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        self.shared.state.lock().rules.push(Rule {
            fault,
            to,
            remaining,
        });
    }

    /// Uses up one occurrence of the first fault at `site` that `pick`
    /// accepts, and returns what `pick` made of it.
    fn take<T>(&self, site: &Site, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let mut state = self.shared.state.lock();
        let index = state
            .rules
            .iter()
            .position(|rule| rule.to.matches(site) && pick(&rule.fault).is_some())?;
        let rule = &mut state.rules[index];
        let picked = pick(&rule.fault);
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                state.rules.remove(index);
            }
        }
        picked
    }

    fn count(&self, destination: &str, update: impl FnOnce(&mut FaultStats)) {
        let mut state = self.shared.state.lock();
        match state.stats.get_mut(destination) {
            Some(stats) => update(stats),
            None => update(state.stats.entry(destination.to_owned()).or_default()),
        }
    }

    fn lost(&self) -> Option<String> {
        self.shared.lost.borrow().clone()
    }

    /// The error of a bind call at `site`, if it must fail.
    fn bind_failure(&self, call: Bind, site: &Site) -> Option<BinderError> {
        let error = match self.lost() {
            Some(reason) => Some(BinderError::connection(reason)),
            None => self.take(site, |fault| match fault {
                Fault::Bind(bind, failure) if bind.covers(call) => {
                    Some(failure.error(&format!("{call:?} bind"), site))
                }
                _ => None,
            }),
        };
        if error.is_some() {
            self.count(&site.destination, |s| s.binds_failed += 1);
        }
        error
    }

    fn panic_if_cued(&self, site: &Site) {
        let cued = self.take(site, |fault| matches!(fault, Fault::Panic).then_some(()));
        if cued.is_some() {
            self.count(&site.destination, |s| s.panics += 1);
            panic!(
                "consumer of `{}` panicked on cue (fault injected by bindery-testkit)",
                site.destination
            );
        }
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("Faults")
            .field("active", &state.rules.len())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// A binder that delegates to another one and injects the faults its
/// [`Faults`] are cued with. See the [module docs](self).
pub struct FaultyBinder {
    inner: Arc<dyn Binder>,
    faults: Faults,
}

impl FaultyBinder {
    /// Wraps `inner`, taking its faults from `faults`.
    pub fn wrap(inner: impl Binder, faults: &Faults) -> Arc<Self> {
        Self::wrap_arc(Arc::new(inner), faults)
    }

    /// Wraps a shared binder (so the test can keep inspecting it, such as a
    /// memory binder's queue depths).
    pub fn wrap_arc(inner: Arc<dyn Binder>, faults: &Faults) -> Arc<Self> {
        Arc::new(Self {
            inner,
            faults: faults.clone(),
        })
    }

    /// The wrapped binder.
    pub fn inner(&self) -> &Arc<dyn Binder> {
        &self.inner
    }

    /// The faults this binder obeys.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn site(&self, destination: &str, dead_letters: bool) -> Site {
        Site {
            destination: destination.into(),
            dead_letters,
        }
    }

    fn wrap_producer(&self, inner: Arc<dyn Producer>, site: Site) -> Arc<dyn Producer> {
        Arc::new(FaultyProducer {
            inner,
            site,
            faults: self.faults.clone(),
        })
    }

    fn wrap_consumer(&self, inner: Box<dyn Consumer>, site: Site) -> Box<dyn Consumer> {
        Box::new(FaultyConsumer {
            inner,
            site,
            faults: self.faults.clone(),
        })
    }

    /// Fails with the bind fault cued for `site`, or counts the wrapped
    /// binder's own error.
    async fn bind<T>(
        &self,
        call: Bind,
        site: &Site,
        bind: impl Future<Output = Result<T, BinderError>>,
    ) -> Result<T, BinderError> {
        if let Some(error) = self.faults.bind_failure(call, site) {
            return Err(error);
        }
        let bound = bind.await;
        if bound.is_err() {
            self.faults
                .count(&site.destination, |s| s.binds_failed += 1);
        }
        bound
    }
}

impl fmt::Debug for FaultyBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBinder")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .finish()
    }
}

#[async_trait]
impl Binder for FaultyBinder {
    fn binder_type(&self) -> &'static str {
        self.inner.binder_type()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        let (call, site) = match from {
            ConsumeFrom::Destination(spec) => (Bind::Consumer, self.site(&spec.destination, false)),
            ConsumeFrom::DeadLetters(group) => (
                Bind::DeadLetterConsumer,
                self.site(&self.inner.dead_letter_name(group), true),
            ),
        };
        let inner = self
            .bind(call, &site, self.inner.bind_consumer(from))
            .await?;
        Ok(self.wrap_consumer(inner, site))
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        let (call, site) = match to {
            PublishTo::Destination(spec) => (Bind::Producer, self.site(&spec.destination, false)),
            PublishTo::DeadLetters(group) => (
                Bind::DeadLetterProducer,
                self.site(&self.inner.dead_letter_name(group), true),
            ),
            PublishTo::Group(group) => {
                (Bind::RedriveProducer, self.site(group.destination(), false))
            }
        };
        let inner = self.bind(call, &site, self.inner.bind_producer(to)).await?;
        Ok(self.wrap_producer(inner, site))
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        self.inner.dead_letter_name(of)
    }

    fn health(&self) -> Health {
        match self.faults.lost() {
            Some(reason) => Health::Down(reason),
            None => self.inner.health(),
        }
    }

    async fn shutdown(&self) -> Result<(), BinderError> {
        self.inner.shutdown().await
    }
}

struct FaultyProducer {
    inner: Arc<dyn Producer>,
    site: Site,
    faults: Faults,
}

impl FaultyProducer {
    fn failed(&self, error: BinderError) -> Result<Confirmation, BinderError> {
        self.faults
            .count(&self.site.destination, |s| s.sends_failed += 1);
        Err(error)
    }
}

#[async_trait]
impl Producer for FaultyProducer {
    async fn send(&self, message: Message) -> Result<Confirmation, BinderError> {
        let site = &self.site;
        self.faults.count(&site.destination, |s| s.sends += 1);
        if let Some(reason) = self.faults.lost() {
            return self.failed(BinderError::connection(reason));
        }
        let send_failure = self.faults.take(site, |fault| match fault {
            Fault::Send(failure) => Some(failure.error("send", site)),
            _ => None,
        });
        if let Some(error) = send_failure {
            return self.failed(error);
        }
        let confirm_failure = self.faults.take(site, |fault| match fault {
            Fault::Confirm(failure) => Some(failure.error("confirm", site)),
            _ => None,
        });
        let delay = self.faults.take(site, |fault| match fault {
            Fault::DelayConfirm(delay) => Some(*delay),
            _ => None,
        });
        // The deadline runs from the send, not from the first poll.
        let deadline = delay.map(|delay| tokio::time::Instant::now() + delay);
        if deadline.is_some() {
            self.faults
                .count(&site.destination, |s| s.confirms_delayed += 1);
        }
        let confirmation = match confirm_failure {
            Some(error) => Confirmation::failed(error),
            None => match self.inner.send(message).await {
                Ok(confirmation) => confirmation,
                Err(error) => return self.failed(error),
            },
        };
        let faults = self.faults.clone();
        let destination = site.destination.clone();
        Ok(Confirmation::pending(async move {
            if let Some(deadline) = deadline {
                tokio::time::sleep_until(deadline).await;
            }
            let confirmed = confirmation.await;
            if confirmed.is_err() {
                faults.count(&destination, |s| s.confirms_failed += 1);
            }
            confirmed
        }))
    }

    async fn flush(&self) -> Result<(), BinderError> {
        self.inner.flush().await
    }
}

struct FaultyConsumer {
    inner: Box<dyn Consumer>,
    site: Site,
    faults: Faults,
}

impl FaultyConsumer {
    fn observe(&self, delivery: Delivery) -> Delivery {
        let (message, acknowledger) = delivery.into_parts();
        Delivery::new(
            message,
            Box::new(ObservedHandle {
                inner: acknowledger,
                destination: self.site.destination.clone(),
                faults: self.faults.clone(),
            }),
        )
    }
}

#[async_trait]
impl Consumer for FaultyConsumer {
    async fn recv(&mut self) -> Option<Delivery> {
        loop {
            self.faults.panic_if_cued(&self.site);
            let mut lost = self.faults.shared.lost.subscribe();
            if lost.borrow_and_update().is_some() {
                let _ = lost.wait_for(Option::is_none).await;
                continue;
            }
            // Both futures are cancel-safe, so losing the connection while
            // waiting loses no message.
            let received = tokio::select! {
                delivery = self.inner.recv() => Some(delivery),
                _ = lost.wait_for(Option::is_some) => None,
            };
            match received {
                None => continue,
                Some(None) => return None,
                Some(Some(delivery)) if self.faults.lost().is_some() => {
                    // In flight as the connection went: the broker takes it
                    // back and redelivers it, as a real one does.
                    let _ = delivery.nack(true).await;
                }
                Some(Some(delivery)) => return Some(self.observe(delivery)),
            }
        }
    }

    fn try_recv(&mut self) -> Option<Delivery> {
        self.faults.panic_if_cued(&self.site);
        if self.faults.lost().is_some() {
            return None;
        }
        let delivery = self.inner.try_recv()?;
        Some(self.observe(delivery))
    }

    async fn cancel(&mut self) -> Result<(), BinderError> {
        self.inner.cancel().await
    }
}

/// Counts the settlement of a delivery and passes it on.
struct ObservedHandle {
    inner: Acknowledger,
    destination: Arc<str>,
    faults: Faults,
}

impl DeliveryHandle for ObservedHandle {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BinderError>> {
        self.faults.count(&self.destination, |s| s.acks += 1);
        Box::pin(self.inner.ack())
    }

    fn nack(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<(), BinderError>> {
        self.faults.count(&self.destination, |s| {
            if requeue {
                s.nacks_requeued += 1;
            } else {
                s.nacks_without_requeue += 1;
            }
        });
        Box::pin(self.inner.nack(requeue))
    }

    fn id(&self) -> DeliveryId {
        self.inner.id()
    }

    fn redelivered(&self) -> bool {
        self.inner.redelivered()
    }

    fn dead_letter_headers(&self, headers: &mut Headers) {
        self.inner.dead_letter_headers(headers);
    }

    fn broker_dead_letters(&self) -> bool {
        self.inner.broker_dead_letters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindery::binder::{BinderExt, ConsumerSpec, ProducerSpec};
    use bindery::memory::MemoryBinder;
    use tokio::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    fn binder(faults: &Faults) -> Arc<FaultyBinder> {
        FaultyBinder::wrap(MemoryBinder::isolated(), faults)
    }

    fn group(destination: &str) -> ConsumerSpec {
        ConsumerSpec::new(format!("{destination}-in"), destination)
            .group("g")
            .dead_letter(true)
    }

    async fn producer(binder: &FaultyBinder, destination: &str) -> Arc<dyn Producer> {
        binder
            .producer(&ProducerSpec::new("out", destination).required_groups(["g"]))
            .await
            .unwrap()
    }

    fn text(body: &str) -> Message {
        Message::new(bytes::Bytes::copy_from_slice(body.as_bytes()))
    }

    fn body(delivery: &Delivery) -> &[u8] {
        delivery.message().payload()
    }

    #[tokio::test]
    async fn bind_faults_fail_the_next_binds_then_pass() {
        let faults = Faults::new();
        let binder = binder(&faults);
        faults.fail_binds(
            Bind::Consumer,
            To::any(),
            Times::Next(2),
            BinderErrorKind::Connection,
        );
        for _ in 0..2 {
            let error = binder.consumer(&group("a")).await.err().unwrap();
            assert_eq!(error.kind(), BinderErrorKind::Connection);
        }
        binder.consumer(&group("a")).await.unwrap();
        binder.producer(&ProducerSpec::new("p", "a")).await.unwrap();
        assert_eq!(faults.stats_of("a").binds_failed, 2);
    }

    #[tokio::test]
    async fn an_always_bind_fault_keeps_its_message_until_cleared() {
        let faults = Faults::new();
        let binder = binder(&faults);
        faults.fail_binds(
            Bind::DeadLetterProducer,
            To::any(),
            Times::Always,
            Failure::new(
                BinderErrorKind::Provisioning,
                "queue declared with other arguments",
            ),
        );
        for _ in 0..3 {
            let error = binder
                .dead_letter_producer(&group("a"))
                .await
                .err()
                .unwrap();
            assert_eq!(error.kind(), BinderErrorKind::Provisioning);
            assert!(
                error
                    .to_string()
                    .contains("queue declared with other arguments")
            );
        }
        binder.consumer(&group("a")).await.unwrap();
        faults.clear();
        binder.dead_letter_producer(&group("a")).await.unwrap();
        assert_eq!(faults.stats().binds_failed, 3);
    }

    #[tokio::test]
    async fn send_faults_hit_only_their_destination_until_cleared() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let mut consumer = binder.consumer(&group("a")).await.unwrap();
        let a = producer(&binder, "a").await;
        let b = producer(&binder, "b").await;
        faults.fail_sends(
            To::destination("a"),
            Times::Always,
            BinderErrorKind::Connection,
        );
        for _ in 0..2 {
            let error = a.send(text("lost")).await.unwrap_err();
            assert_eq!(error.kind(), BinderErrorKind::Connection);
        }
        b.send(text("b")).await.unwrap().await.unwrap();
        assert!(
            consumer.try_recv().is_none(),
            "a failed send is not passed on"
        );
        faults.clear();
        a.send(text("kept")).await.unwrap().await.unwrap();
        assert_eq!(body(&consumer.recv().await.unwrap()), b"kept");
        let stats = faults.stats_of("a");
        assert_eq!((stats.sends, stats.sends_failed), (3, 2));
        assert_eq!((faults.stats().sends, faults.stats().sends_failed), (4, 2));
    }

    #[tokio::test]
    async fn a_failed_confirm_completes_with_the_error_and_routes_nothing() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let mut consumer = binder.consumer(&group("a")).await.unwrap();
        let a = producer(&binder, "a").await;
        faults.fail_confirms(
            To::destination("a"),
            Times::Next(1),
            BinderErrorKind::Rejected,
        );
        let confirm = a
            .send(text("nacked"))
            .await
            .expect("the send itself passes");
        assert_eq!(confirm.await.unwrap_err().kind(), BinderErrorKind::Rejected);
        a.send(text("confirmed")).await.unwrap().await.unwrap();
        assert_eq!(body(&consumer.recv().await.unwrap()), b"confirmed");
        assert!(consumer.try_recv().is_none());
        assert_eq!(faults.stats_of("a").confirms_failed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_confirm_stays_pending_for_the_delay() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let mut consumer = binder.consumer(&group("a")).await.unwrap();
        let a = producer(&binder, "a").await;
        let delay = Duration::from_secs(30);
        faults.delay_confirms(To::any(), Times::Next(1), delay);
        let sent = Instant::now();
        let confirm = a.send(text("slow")).await.unwrap();
        assert_eq!(
            body(&consumer.recv().await.unwrap()),
            b"slow",
            "the message is passed on at once"
        );
        tokio::time::sleep(delay - Duration::from_millis(1)).await;
        let mut confirm = std::pin::pin!(confirm);
        assert!(futures::poll!(confirm.as_mut()).is_pending());
        confirm.await.unwrap();
        assert_eq!(sent.elapsed(), delay);
        let started = Instant::now();
        a.send(text("fast")).await.unwrap().await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "the delay was used up");
        assert_eq!(faults.stats().confirms_delayed, 1);
    }

    #[tokio::test]
    async fn dead_letter_faults_spare_ordinary_producers() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let spec = group("a");
        let _consumer = binder.consumer(&spec).await.unwrap();
        let mut dead_letters = binder.dead_letter_consumer(&spec).await.unwrap();
        let dlq = binder.dead_letter_producer(&spec).await.unwrap();
        let a = producer(&binder, "a").await;
        faults.fail_dead_letters(Times::Next(2), BinderErrorKind::Rejected);
        a.send(text("ordinary")).await.unwrap().await.unwrap();
        for _ in 0..2 {
            let confirm = dlq.send(text("refused")).await.unwrap();
            assert_eq!(confirm.await.unwrap_err().kind(), BinderErrorKind::Rejected);
        }
        dlq.send(text("parked")).await.unwrap().await.unwrap();
        assert_eq!(body(&dead_letters.recv().await.unwrap()), b"parked");
        assert!(
            dead_letters.try_recv().is_none(),
            "refused ones were not stored"
        );
        let name = binder.dead_letter_destination(&spec).unwrap();
        assert_eq!(faults.stats_of(&name).confirms_failed, 2);
        assert_eq!(faults.stats_of("a").confirms_failed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_holds_messages_until_it_comes_back() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let mut consumer = binder.consumer(&group("a")).await.unwrap();
        let a = producer(&binder, "a").await;
        a.send(text("before")).await.unwrap().await.unwrap();

        faults.lose_connection();
        assert!(!faults.is_connected());
        assert!(matches!(binder.health(), Health::Down(_)));
        let error = a.send(text("during")).await.unwrap_err();
        assert_eq!(error.kind(), BinderErrorKind::Connection);
        let error = binder.consumer(&group("b")).await.err().unwrap();
        assert_eq!(error.kind(), BinderErrorKind::Connection);
        assert!(consumer.try_recv().is_none());
        assert!(
            tokio::time::timeout(WAIT, consumer.recv()).await.is_err(),
            "nothing is delivered while the connection is lost"
        );

        let restore = faults.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            restore.restore_connection();
        });
        let delivery = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .expect("delivered once the connection is back")
            .unwrap();
        assert_eq!(body(&delivery), b"before");
        assert_eq!(binder.health(), Health::Up);
        a.send(text("after")).await.unwrap().await.unwrap();
        assert_eq!(body(&consumer.recv().await.unwrap()), b"after");
    }

    #[tokio::test]
    async fn a_cued_panic_kills_the_receiving_task_once() {
        let faults = Faults::new();
        let binder = binder(&faults);
        let mut a = binder.consumer(&group("a")).await.unwrap();
        let mut b = binder.consumer(&group("b")).await.unwrap();
        faults.panic_on_receive(To::destination("a"), Times::Next(1));
        let died = tokio::spawn(async move {
            let _ = a.recv().await;
        })
        .await
        .unwrap_err();
        assert!(died.is_panic());
        assert!(
            b.try_recv().is_none(),
            "another destination's consumer is spared"
        );

        let mut a = binder.consumer(&group("a")).await.unwrap();
        producer(&binder, "a")
            .await
            .send(text("x"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            body(&a.recv().await.unwrap()),
            b"x",
            "only the next receive panics"
        );
        assert_eq!(faults.stats().panics, 1);
    }

    #[tokio::test]
    async fn settlements_are_counted_and_delivery_facts_delegated() {
        let faults = Faults::new();
        let binder = binder(&faults);
        // Prefetch 1, so the requeued message is the next one taken.
        let spec = group("a").prefetch(1);
        let mut consumer = binder.consumer(&spec).await.unwrap();
        let a = producer(&binder, "a").await;
        for body in ["ack", "requeue", "reject"] {
            a.send(text(body)).await.unwrap().await.unwrap();
        }
        let first = consumer.recv().await.unwrap();
        assert_eq!(
            first.id().to_string(),
            "a.g#0",
            "the wrapped binder's identity"
        );
        first.ack().await.unwrap();
        consumer.recv().await.unwrap().nack(true).await.unwrap();
        let (_, redelivered) = consumer.recv().await.unwrap().into_parts();
        assert!(
            redelivered.redelivered(),
            "the requeued message comes back first"
        );
        redelivered.ack().await.unwrap();
        consumer.recv().await.unwrap().nack(false).await.unwrap();
        let stats = faults.stats_of("a");
        assert_eq!(
            (
                stats.acks,
                stats.nacks_requeued,
                stats.nacks_without_requeue
            ),
            (2, 1, 1)
        );
    }
}

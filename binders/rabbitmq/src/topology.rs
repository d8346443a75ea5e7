//! What a binding declares on the broker, named as Spring Cloud Stream's
//! RabbitMQ binder names it:
//!
//! | what | name | declared as |
//! |---|---|---|
//! | destination | `<destination>` | durable exchange, `exchange-type` (topic) |
//! | group | `<destination>.<group>` | durable queue bound with each routing key |
//! | no group | `anonymous.<id>` | exclusive, auto-delete queue |
//! | dead letters | `DLX` | durable direct exchange |
//! | dead-letter queue | `<destination>.<group>.dlq` | durable queue (quorum with `dlq-quorum`) bound to `DLX` with `<destination>.<group>` |
//!
//! A group queue carries `x-dead-letter-exchange = DLX` and
//! `x-dead-letter-routing-key = <destination>.<group>` (unless
//! `auto-bind-dlq = false`), so messages the broker itself rejects or
//! expires land in the dead-letter queue too. These arguments do not
//! depend on the consumer's `dead-letter` setting: a producer declaring
//! `required-groups` and every consumer of the group must declare the queue
//! alike, or the broker refuses the second declaration. The DLX and DLQ are
//! declared by consumers with `dead-letter` on; without them a rejected
//! message finds no queue behind `DLX` and is dropped.
//!
//! Declaring is idempotent, so it is done again on every new channel:
//! after a broker restart or a deleted queue, a binding finds its topology
//! again.

use bindery_core::binder::kit::anonymous_name;
use bindery_core::binder::{ConsumerSpec, ProducerSpec};
use bindery_core::routing::RoutingPattern;
use lapin::Channel;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::connection::unless_lost;
use crate::error::{RabbitError, Result};
use crate::settings::{ExchangeType, RabbitBindingOptions};

/// The dead-letter exchange every dead-letter queue is bound to.
pub const DEAD_LETTER_EXCHANGE: &str = "DLX";

/// The group queue's name: `<destination>.<group>`, or `<group>` with
/// `queue-name-group-only`.
pub fn group_queue_name(destination: &str, group: &str, options: &RabbitBindingOptions) -> String {
    if options.queue_name_group_only {
        group.to_owned()
    } else {
        format!("{destination}.{group}")
    }
}

/// The dead-letter queue's name: `dead-letter-queue-name`, else
/// `<queue>.dlq`.
pub fn dead_letter_queue_name(queue: &str, options: &RabbitBindingOptions) -> String {
    options
        .dead_letter_queue_name
        .clone()
        .unwrap_or_else(|| format!("{queue}.dlq"))
}

/// A fresh `anonymous.<id>` name, unique across processes.
pub fn anonymous_queue_name() -> String {
    anonymous_name("anonymous")
}

/// An exchange to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExchangeDecl {
    pub(crate) name: String,
    pub(crate) kind: ExchangeType,
}

/// A queue to declare, with its bindings (exchange, routing key).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueueDecl {
    pub(crate) name: String,
    pub(crate) durable: bool,
    pub(crate) exclusive: bool,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) bindings: Vec<(String, String)>,
}

/// Exchanges, then queues with their bindings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Topology {
    pub(crate) exchanges: Vec<ExchangeDecl>,
    pub(crate) queues: Vec<QueueDecl>,
}

impl Topology {
    /// The destination exchange alone (a producer without groups).
    pub(crate) fn destination(destination: &str, options: &RabbitBindingOptions) -> Self {
        Self {
            exchanges: vec![ExchangeDecl {
                name: destination.to_owned(),
                kind: options.exchange_type,
            }],
            queues: Vec::new(),
        }
    }

    /// A producer's: its exchange and the queues of its `required-groups`,
    /// bound to every routing key.
    pub(crate) fn producer(spec: &ProducerSpec, options: &RabbitBindingOptions) -> Self {
        let mut topology = Self::destination(&spec.destination, options);
        for group in &spec.required_groups {
            topology.queues.push(group_queue(
                &spec.destination,
                group,
                options,
                &[RoutingPattern::any()],
                options.auto_bind_dlq,
            ));
        }
        topology
    }

    /// A consumer's: its exchange, its queue (the group's or an anonymous
    /// one named `anonymous`), and with `dead-letter` on the DLX and DLQ, so
    /// that broker-side rejections have somewhere to go.
    pub(crate) fn consumer(
        spec: &ConsumerSpec,
        options: &RabbitBindingOptions,
        anonymous: &str,
    ) -> Self {
        let mut topology = Self::destination(&spec.destination, options);
        match &spec.group {
            Some(group) => {
                let queue = group_queue(
                    &spec.destination,
                    group,
                    options,
                    &spec.routing_keys,
                    options.auto_bind_dlq,
                );
                if spec.dead_letter {
                    topology.add_dead_letters(&queue.name, options);
                }
                topology.queues.push(queue);
            }
            None => topology.queues.push(QueueDecl {
                name: anonymous.to_owned(),
                durable: false,
                exclusive: true,
                auto_delete: true,
                arguments: limits(options),
                bindings: bindings(&spec.destination, options.exchange_type, &spec.routing_keys),
            }),
        }
        topology
    }

    /// The dead-letter exchange and queue of group queue `queue`.
    pub(crate) fn dead_letters(queue: &str, options: &RabbitBindingOptions) -> Self {
        let mut topology = Self::default();
        topology.add_dead_letters(queue, options);
        topology
    }

    /// The group queue alone, with its exchange (redrive).
    pub(crate) fn group(spec: &ConsumerSpec, group: &str, options: &RabbitBindingOptions) -> Self {
        let mut topology = Self::destination(&spec.destination, options);
        topology.queues.push(group_queue(
            &spec.destination,
            group,
            options,
            &spec.routing_keys,
            options.auto_bind_dlq,
        ));
        topology
    }

    fn add_dead_letters(&mut self, queue: &str, options: &RabbitBindingOptions) {
        self.exchanges.push(ExchangeDecl {
            name: DEAD_LETTER_EXCHANGE.to_owned(),
            kind: ExchangeType::Direct,
        });
        let mut arguments = FieldTable::default();
        if options.dlq_quorum {
            arguments.insert("x-queue-type".into(), long("quorum"));
        }
        self.queues.push(QueueDecl {
            name: dead_letter_queue_name(queue, options),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
            bindings: vec![(DEAD_LETTER_EXCHANGE.to_owned(), queue.to_owned())],
        });
    }

    /// Declares everything on `channel`. After a failure the broker has
    /// closed the channel; open another one to try again.
    pub(crate) async fn declare(&self, channel: &Channel) -> Result<()> {
        let open = || channel.status().connected();
        for exchange in &self.exchanges {
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            let declaring = channel.exchange_declare(
                short("exchange", &exchange.name)?,
                exchange.kind.kind(),
                options,
                FieldTable::default(),
            );
            unless_lost(open, declaring).await.map_err(|e| {
                declare_error(
                    format!(
                        "declaring {} exchange `{}`",
                        exchange.kind.as_str(),
                        exchange.name
                    ),
                    e,
                )
            })?;
        }
        for queue in &self.queues {
            let options = QueueDeclareOptions {
                durable: queue.durable,
                exclusive: queue.exclusive,
                auto_delete: queue.auto_delete,
                ..QueueDeclareOptions::default()
            };
            let name = short("queue", &queue.name)?;
            unless_lost(
                open,
                channel.queue_declare(name.clone(), options, queue.arguments.clone()),
            )
            .await
            .map_err(|e| declare_error(format!("declaring queue `{}`", queue.name), e))?;
            for (exchange, routing_key) in &queue.bindings {
                let binding = channel.queue_bind(
                    name.clone(),
                    short("exchange", exchange)?,
                    short("routing key", routing_key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                );
                unless_lost(open, binding).await.map_err(|e| {
                    declare_error(
                        format!(
                            "binding queue `{}` to exchange `{exchange}` with `{routing_key}`",
                            queue.name
                        ),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// A durable group queue (non-durable and auto-deleted without
/// `durable-subscription`), with the queue arguments of `options` and,
/// with `dead_letter`, the arguments that route rejections to `DLX`.
fn group_queue(
    destination: &str,
    group: &str,
    options: &RabbitBindingOptions,
    patterns: &[RoutingPattern],
    dead_letter: bool,
) -> QueueDecl {
    let name = group_queue_name(destination, group, options);
    let mut arguments = limits(options);
    if options.quorum {
        arguments.insert("x-queue-type".into(), long("quorum"));
    }
    if options.single_active_consumer {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    if dead_letter {
        arguments.insert("x-dead-letter-exchange".into(), long(DEAD_LETTER_EXCHANGE));
        arguments.insert("x-dead-letter-routing-key".into(), long(&name));
    }
    QueueDecl {
        bindings: bindings(destination, options.exchange_type, patterns),
        durable: options.durable_subscription,
        exclusive: false,
        auto_delete: !options.durable_subscription,
        arguments,
        name,
    }
}

/// `x-message-ttl` and `x-max-length`, which every queue kind takes.
fn limits(options: &RabbitBindingOptions) -> FieldTable {
    let mut arguments = FieldTable::default();
    if let Some(ttl) = options.ttl {
        let ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongUInt(ms));
    }
    if let Some(max) = options.max_length {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
    }
    arguments
}

/// How each routing-key pattern binds on an exchange of type `kind`:
/// patterns as they are on topic exchanges; on a direct exchange the
/// catch-all `#` binds the destination's name, which is the routing key
/// producers use by default; fanout and headers exchanges ignore keys, so
/// one binding does.
fn bindings(
    destination: &str,
    kind: ExchangeType,
    patterns: &[RoutingPattern],
) -> Vec<(String, String)> {
    let bind = |key: &str| (destination.to_owned(), key.to_owned());
    match kind {
        ExchangeType::Topic => patterns.iter().map(|p| bind(p.as_str())).collect(),
        ExchangeType::Direct => patterns
            .iter()
            .map(|p| {
                if p.is_catch_all() {
                    bind(destination)
                } else {
                    bind(p.as_str())
                }
            })
            .collect(),
        ExchangeType::Fanout | ExchangeType::Headers => vec![bind("")],
    }
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// An AMQP short string, or an error naming what is too long.
pub(crate) fn short(what: &'static str, name: &str) -> Result<ShortString> {
    ShortString::try_new(name).map_err(|_| RabbitError::NameTooLong {
        what,
        name: name.to_owned(),
    })
}

fn declare_error(action: String, source: lapin::Error) -> RabbitError {
    let action = if crate::error::is_precondition_failed(&source) {
        format!(
            "{action} (it exists with other settings; give the binding the same options, or delete it)"
        )
    } else {
        action
    };
    RabbitError::channel(action, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(table: &FieldTable, key: &str) -> Option<String> {
        match table.inner().get(key)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    #[test]
    fn group_topology_follows_spring() {
        let spec = ConsumerSpec::new("in", "orders")
            .group("billing")
            .routing_keys(["item.*", "audit.#"])
            .dead_letter(true);
        let topology = Topology::consumer(&spec, &RabbitBindingOptions::default(), "unused");
        let exchanges: Vec<(&str, ExchangeType)> = topology
            .exchanges
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect();
        assert_eq!(
            exchanges,
            [
                ("orders", ExchangeType::Topic),
                ("DLX", ExchangeType::Direct)
            ]
        );
        let dlq = &topology.queues[0];
        assert_eq!(dlq.name, "orders.billing.dlq");
        assert_eq!(
            dlq.bindings,
            [("DLX".to_owned(), "orders.billing".to_owned())]
        );
        let queue = &topology.queues[1];
        assert_eq!(queue.name, "orders.billing");
        assert!(queue.durable && !queue.exclusive && !queue.auto_delete);
        assert_eq!(
            queue.bindings,
            [
                ("orders".to_owned(), "item.*".to_owned()),
                ("orders".to_owned(), "audit.#".to_owned())
            ]
        );
        assert_eq!(
            text(&queue.arguments, "x-dead-letter-exchange").as_deref(),
            Some("DLX")
        );
        assert_eq!(
            text(&queue.arguments, "x-dead-letter-routing-key").as_deref(),
            Some("orders.billing")
        );
    }

    #[test]
    fn anonymous_queue_is_exclusive_and_auto_deleted() {
        let spec = ConsumerSpec::new("in", "orders");
        let name = anonymous_queue_name();
        assert!(name.starts_with("anonymous.") && name != anonymous_queue_name());
        let topology = Topology::consumer(&spec, &RabbitBindingOptions::default(), &name);
        let queue = &topology.queues[0];
        assert_eq!(queue.name, name);
        assert!(!queue.durable && queue.exclusive && queue.auto_delete);
        assert_eq!(queue.bindings, [("orders".to_owned(), "#".to_owned())]);
    }

    #[test]
    fn options_become_queue_arguments_and_names() {
        let options = RabbitBindingOptions {
            quorum: true,
            ttl: Some(std::time::Duration::from_secs(5)),
            max_length: Some(100),
            single_active_consumer: true,
            dead_letter_queue_name: Some("parking".into()),
            queue_name_group_only: true,
            exchange_type: ExchangeType::Direct,
            ..RabbitBindingOptions::default()
        };
        let spec = ConsumerSpec::new("in", "orders")
            .group("billing")
            .dead_letter(true);
        let topology = Topology::consumer(&spec, &options, "unused");
        let queue = topology
            .queues
            .iter()
            .find(|q| q.name == "billing")
            .unwrap();
        let args = &queue.arguments;
        assert_eq!(text(args, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(
            args.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongUInt(5000))
        );
        assert_eq!(
            args.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(100))
        );
        assert_eq!(
            args.inner().get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        // The catch-all binds the destination's name on a direct exchange.
        assert_eq!(queue.bindings, [("orders".to_owned(), "orders".to_owned())]);
        let dlq = topology
            .queues
            .iter()
            .find(|q| q.name == "parking")
            .unwrap();
        assert_eq!(dlq.bindings, [("DLX".to_owned(), "billing".to_owned())]);
        // A classic DLQ unless asked, as in Spring, even beside a quorum queue.
        assert_eq!(text(&dlq.arguments, "x-queue-type"), None);
    }

    /// A classic DLQ lives on one node: while it is down, the consumer
    /// cannot declare it, and so cannot subscribe, in a cluster too.
    /// `dlq-quorum` replicates it as the group queue is.
    #[test]
    fn dlq_quorum_declares_the_dead_letter_queue_as_a_quorum_queue() {
        let options = RabbitBindingOptions {
            quorum: true,
            dlq_quorum: true,
            ..RabbitBindingOptions::default()
        };
        let spec = ConsumerSpec::new("in", "orders")
            .group("billing")
            .dead_letter(true);
        for topology in [
            Topology::consumer(&spec, &options, "unused"),
            Topology::dead_letters("orders.billing", &options),
        ] {
            let dlq = topology
                .queues
                .iter()
                .find(|q| q.name == "orders.billing.dlq")
                .unwrap();
            assert!(dlq.durable && !dlq.auto_delete && !dlq.exclusive);
            assert_eq!(
                text(&dlq.arguments, "x-queue-type").as_deref(),
                Some("quorum")
            );
        }
    }

    #[test]
    fn producer_declares_required_groups_with_dead_letter_arguments() {
        let spec = ProducerSpec::new("out", "orders").required_groups(["a", "b"]);
        let topology = Topology::producer(&spec, &RabbitBindingOptions::default());
        let names: Vec<&str> = topology.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["orders.a", "orders.b"]);
        assert!(
            topology.queues[0]
                .arguments
                .contains_key("x-dead-letter-exchange")
        );
        let no_dlq = RabbitBindingOptions {
            auto_bind_dlq: false,
            ..RabbitBindingOptions::default()
        };
        assert!(
            Topology::producer(&spec, &no_dlq).queues[0]
                .arguments
                .inner()
                .is_empty()
        );
    }

    #[test]
    fn group_queue_arguments_do_not_depend_on_the_dead_letter_setting() {
        // A producer's required group and consumers with dead-letter on or
        // off must declare the queue alike, or the broker refuses one.
        let options = RabbitBindingOptions::default();
        let producer = Topology::producer(
            &ProducerSpec::new("out", "o").required_groups(["g"]),
            &options,
        );
        let declared = |dead_letter: bool| {
            let spec = ConsumerSpec::new("in", "o")
                .group("g")
                .dead_letter(dead_letter);
            let topology = Topology::consumer(&spec, &options, "unused");
            topology
                .queues
                .into_iter()
                .find(|q| q.name == "o.g")
                .unwrap()
        };
        assert_eq!(declared(false), producer.queues[0]);
        assert_eq!(declared(true), producer.queues[0]);
        let without =
            Topology::consumer(&ConsumerSpec::new("in", "o").group("g"), &options, "unused");
        assert!(
            without.exchanges.iter().all(|e| e.name != "DLX"),
            "no DLX without dead-letter"
        );
    }

    #[test]
    fn fanout_binds_once_and_long_names_are_refused() {
        let options = RabbitBindingOptions {
            exchange_type: ExchangeType::Fanout,
            ..RabbitBindingOptions::default()
        };
        let spec = ConsumerSpec::new("in", "news")
            .group("g")
            .routing_keys(["a", "b"]);
        let topology = Topology::consumer(&spec, &options, "unused");
        assert_eq!(
            topology.queues[0].bindings,
            [("news".to_owned(), String::new())]
        );
        assert!(matches!(
            short("queue", &"x".repeat(256)),
            Err(RabbitError::NameTooLong { what: "queue", .. })
        ));
    }
}

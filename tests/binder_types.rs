//! Binder contract v2 from a binder author's side: a binder type registered
//! without linkme (`AppBuilder::binder_type`), its binding options parsed
//! once by validation and handed to the binder as its own type, and
//! capabilities, not type names, deciding what validation says.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bindery::binder::{
    Binder, BinderExt, Capabilities, ConsumeFrom, Consumer, ConsumerSpec, GroupBinding, Producer,
    ProducerSpec, PublishTo,
};
use bindery::config::Problem;
use bindery::memory::{Broker, MemoryBinder};
use bindery::prelude::*;
use bindery::registry::BinderProvider;
use bindery::{AppBuilder, BinderError, Error};
use parking_lot::Mutex;

/// A third-party binder type: the memory binder under another name, that
/// declares partitions and records the options each consumer bind got.
struct Lanes;

const LANES: &str = "lanes";

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
struct LanesSettings {
    broker: String,
}

impl Default for LanesSettings {
    fn default() -> Self {
        Self {
            broker: "binder-types".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
struct LanesOptions {
    lane_count: Option<u32>,
}

/// The options every consumer bind of a `lanes` binder received, by binding.
static SEEN: Mutex<Vec<(String, LanesOptions)>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct LanesBinder(MemoryBinder);

#[async_trait]
impl Binder for LanesBinder {
    fn binder_type(&self) -> &'static str {
        LANES
    }

    fn capabilities(&self) -> Capabilities {
        Lanes::CAPABILITIES
    }

    async fn bind_consumer(&self, from: ConsumeFrom<'_>) -> Result<Box<dyn Consumer>, BinderError> {
        if let ConsumeFrom::Destination(spec) = from {
            let options: LanesOptions = spec.options.get()?;
            SEEN.lock().push((spec.binding.clone(), options));
        }
        self.0.bind_consumer(from).await
    }

    async fn bind_producer(&self, to: PublishTo<'_>) -> Result<Arc<dyn Producer>, BinderError> {
        self.0.bind_producer(to).await
    }

    fn dead_letter_name(&self, of: GroupBinding<'_>) -> String {
        self.0.dead_letter_name(of)
    }
}

impl BinderProvider for Lanes {
    const TYPE: &'static str = LANES;
    const CAPABILITIES: Capabilities = Capabilities::all().with_partitions(true);
    type Settings = LanesSettings;
    type BindingOptions = LanesOptions;

    fn create(_name: &str, settings: LanesSettings) -> Result<Arc<dyn Binder>, BinderError> {
        Ok(Arc::new(LanesBinder(MemoryBinder::new(
            Broker::shared(&settings.broker),
            100,
        ))))
    }

    fn check_binding_options(options: &LanesOptions, path: &str, problems: &mut Vec<Problem>) {
        if options.lane_count == Some(0) {
            problems.push(Problem::new(
                format!("{path}.lane-count"),
                "lane-count must be at least 1",
            ));
        }
    }
}

async fn shout(text: String) -> String {
    text.to_uppercase()
}

fn app(config: &str) -> AppBuilder {
    App::builder()
        .without_registered_functions()
        .function("shout", shout)
        .config_toml(config)
        .env(Vec::<(String, String)>::new())
}

const CONFIG: &str = r#"
    [binders.lanes]
    type = "lanes"
    broker = "binder-types"
    [bindings.shout-in-0]
    destination = "words"
    group = "g"
    content-type = "text/plain"
    [bindings.shout-in-0.lanes]
    lane-count = 3
    [bindings.shout-out-0]
    destination = "loud"
    content-type = "text/plain"
    [bindings.shout-out-0.producer]
    partition-count = 4
    required-groups = ["reader"]
"#;

fn problems(builder: AppBuilder) -> Vec<String> {
    match builder.build() {
        Err(Error::Config(problems)) => problems.0.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected configuration problems, got {other}"),
        Ok(_) => panic!("expected configuration problems, got a valid app"),
    }
}

#[tokio::test]
async fn a_binder_type_registered_without_linkme_runs_with_its_typed_options() {
    let app = app(CONFIG)
        .binder_type::<Lanes>()
        .build()
        .expect("valid configuration");
    // The type declares partitions, so partition-count draws no warning.
    let warnings: Vec<String> = app
        .wiring()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        !warnings.iter().any(|w| w.contains("partition-count")),
        "{warnings:?}"
    );
    let running = app.start().await.expect("starts");
    tokio::time::timeout(Duration::from_secs(10), running.ready())
        .await
        .expect("bound");

    let client = MemoryBinder::new(Broker::shared("binder-types"), 100);
    let mut loud = client
        .consumer(&ConsumerSpec::new("reader", "loud").group("reader"))
        .await
        .unwrap();
    let words = client
        .producer(&ProducerSpec::new("writer", "words"))
        .await
        .unwrap();
    words
        .send(Message::new(Bytes::from_static(b"hello")).with_header("contentType", "text/plain"))
        .await
        .unwrap()
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), loud.recv())
        .await
        .expect("an output in time")
        .expect("an output");
    assert_eq!(&delivery.message().payload()[..], b"HELLO");
    delivery.ack().await.unwrap();
    running.shutdown().await.unwrap();

    let seen = SEEN.lock().clone();
    assert!(
        seen.contains(&(
            "shout-in-0".to_owned(),
            LanesOptions {
                lane_count: Some(3)
            }
        )),
        "the binder got its section as its own type: {seen:?}"
    );
}

#[test]
fn an_unregistered_type_is_a_configuration_problem() {
    let problems = problems(app(CONFIG));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("binders.lanes.type") && p.contains("lanes")),
        "{problems:?}"
    );
}

#[test]
fn the_registered_type_checks_its_own_options_section() {
    let config = CONFIG.replace("lane-count = 3", "lane-count = 0\nlane-size = 9");
    let problems = problems(app(&config).binder_type::<Lanes>());
    for path in [
        "bindings.shout-in-0.lanes.lane-count",
        "bindings.shout-in-0.lanes.lane-size",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(path)),
            "no problem at {path}: {problems:?}"
        );
    }
}

#[test]
fn partition_count_on_a_binder_without_partitions_warns_by_capability() {
    let config = CONFIG.replace("type = \"lanes\"", "type = \"memory\"");
    let config = config.replace("[bindings.shout-in-0.lanes]\n    lane-count = 3\n", "");
    let app = app(&config).build().expect("valid configuration");
    let warnings: Vec<String> = app
        .wiring()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("partition-count") && w.contains("has no partitions")),
        "{warnings:?}"
    );
}

//! Configuration: Spring's defaults, environment overrides, `${VAR}`
//! secrets, YAML, and every validation message with its key path and hint.

use std::time::Duration;

use bindery::config::{Problem, Wiring};
use bindery::prelude::*;
use bindery::{AppBuilder, Error};

async fn enrich(order: String) -> String {
    order
}

async fn audit(_order: String) {}

async fn tick() -> u32 {
    1
}

fn app() -> AppBuilder {
    App::builder()
        .without_registered_functions()
        .function("enrich", enrich)
        .function("audit", audit)
        .function("tick", tick)
        .env(Vec::<(String, String)>::new())
}

fn wiring(builder: AppBuilder) -> Wiring {
    builder
        .build()
        .expect("valid configuration")
        .wiring()
        .clone()
}

fn problems(builder: AppBuilder) -> Vec<Problem> {
    match builder.build() {
        Err(Error::Config(problems)) => problems.0,
        Err(other) => panic!("expected configuration problems, got {other}"),
        Ok(_) => panic!("expected configuration problems, got a valid app"),
    }
}

/// Asserts a problem sits at `path` whose text contains every fragment.
fn assert_problem(problems: &[Problem], path: &str, fragments: &[&str]) {
    let found = problems
        .iter()
        .filter(|p| p.path == path)
        .any(|p| fragments.iter().all(|f| p.to_string().contains(f)));
    assert!(
        found,
        "no problem at `{path}` containing {fragments:?} in:\n{}",
        render(problems)
    );
}

fn render(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}\n")).collect()
}

#[test]
fn defaults_follow_spring_cloud_stream() {
    let wiring = wiring(app().config_toml(
        r#"
        [bindery]
        definition = "enrich"
        [bindings.enrich-in-0]
        group = "billing"
        "#,
    ));
    assert_eq!(
        wiring.default_binder.as_deref(),
        Some("memory"),
        "the memory binder when nothing is declared"
    );
    assert_eq!(wiring.app.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(wiring.app.poller.fixed_delay, Duration::from_secs(1));
    let function = &wiring.functions[0];
    let input = function.input.as_ref().unwrap();
    assert_eq!(
        input.consumer.destination, "enrich-in-0",
        "destination defaults to the binding name"
    );
    assert_eq!(input.consumer.group.as_deref(), Some("billing"));
    assert_eq!(input.content_type, "application/json");
    assert_eq!(input.retry.max_attempts(), 3);
    let backoff = input.retry.backoff();
    assert_eq!(
        (1..=5)
            .map(|a| backoff.delay(a).as_secs())
            .collect::<Vec<_>>(),
        [1, 2, 4, 8, 10]
    );
    assert!(
        input.consumer.dead_letter,
        "dead-letter defaults on with a group"
    );
    assert_eq!(input.consumer.concurrency.get(), 1);
    assert_eq!(input.consumer.prefetch.get(), 16);
    assert_eq!(
        input
            .consumer
            .routing_keys
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>(),
        ["#"]
    );
    let output = function.output.as_ref().unwrap();
    assert_eq!(output.producer.destination, "enrich-out-0");
    assert!(output.routing_key.is_none() && output.partition_key.is_none());
}

#[test]
fn without_a_group_dead_letters_default_off() {
    let wiring = wiring(app().config_toml("[bindery]\ndefinition = \"audit\"\n"));
    let input = wiring.functions[0].input.as_ref().unwrap();
    assert_eq!(input.consumer.group, None);
    assert!(!input.consumer.dead_letter);
}

#[test]
fn durations_read_humantime_and_spring_milliseconds() {
    let wiring = wiring(app().config_toml(
        r#"
        [bindery]
        definition = "audit"
        shutdown-timeout = "1m 30s"
        [bindings.audit-in-0.consumer]
        back-off-initial-interval = 250
        back-off-max-interval = "2s"
        "#,
    ));
    assert_eq!(wiring.app.shutdown_timeout, Duration::from_secs(90));
    let backoff = wiring.functions[0].input.as_ref().unwrap().retry.backoff();
    assert_eq!(backoff.delay(1), Duration::from_millis(250));
    assert_eq!(backoff.delay(9), Duration::from_secs(2));
}

#[test]
fn environment_variables_override_keys() {
    let wiring = wiring(
        app()
            .config_toml(
                r#"
                [bindery]
                definition = "enrich|audit"
                [bindings."enrich|audit-in-0"]
                destination = "orders"
                group = "billing"
                "#,
            )
            .env([
                (
                    "BINDERY_BINDINGS__ENRICH_AUDIT_IN_0__DESTINATION",
                    "orders-v2",
                ),
                (
                    "BINDERY_BINDINGS__ENRICH_AUDIT_IN_0__CONSUMER__MAX_ATTEMPTS",
                    "5",
                ),
                (
                    "BINDERY_BINDINGS__ENRICH_AUDIT_IN_0__CONSUMER__BINDING_ROUTING_KEYS",
                    r#"["item.*","audit.#"]"#,
                ),
                ("BINDERY_SHUTDOWN_TIMEOUT", "5s"),
            ]),
    );
    let input = wiring.functions[0].input.as_ref().unwrap();
    assert_eq!(input.consumer.destination, "orders-v2");
    assert_eq!(input.retry.max_attempts(), 5);
    assert_eq!(input.consumer.routing_keys.len(), 2);
    assert_eq!(wiring.app.shutdown_timeout, Duration::from_secs(5));
}

#[test]
fn environment_overrides_can_choose_the_definition() {
    let wiring = wiring(app().env([("BINDERY_DEFINITION", "tick")]));
    assert_eq!(wiring.functions.len(), 1);
    assert_eq!(wiring.functions[0].definition, "tick");
}

#[test]
fn secrets_are_substituted_from_the_environment() {
    let config = r#"
        [bindery]
        definition = "audit"
        [binders.local]
        type = "memory"
        broker = "${BROKER_NAME}"
        [bindings.audit-in-0]
        destination = "${DESTINATION:audits}"
    "#;
    let wiring = wiring(app().config_toml(config).env([("BROKER_NAME", "private")]));
    assert_eq!(
        wiring.binder("local").unwrap().settings["broker"],
        "private"
    );
    assert_eq!(
        wiring.functions[0]
            .input
            .as_ref()
            .unwrap()
            .consumer
            .destination,
        "audits"
    );

    let problems = problems(app().config_toml(config));
    assert_problem(
        &problems,
        "binders.local.broker",
        &["environment variable `BROKER_NAME` is not set"],
    );
}

#[test]
fn yaml_reads_like_toml() {
    let wiring = wiring(app().config_yaml(
        "bindery:\n  definition: enrich\nbindings:\n  enrich-in-0:\n    destination: orders\n    group: billing\n    consumer:\n      max-attempts: 4\n",
    ));
    let input = wiring.functions[0].input.as_ref().unwrap();
    assert_eq!(input.consumer.destination, "orders");
    assert_eq!(input.retry.max_attempts(), 4);
}

#[test]
fn all_problems_are_reported_in_one_run() {
    let problems = problems(app().config_toml(
        r#"
        [bindery]
        definition = "enrch|audit"
        [binders.rabbit]
        type = "memory"
        [binders.kafka]
        type = "memory"
        [bindery.poller]
        fixed-dely = "2s"
        [bindings.enrich-in-0]
        binder = "kafak"
        [bindings.enrich-in-0.consumer]
        max-attemps = 3
        "#,
    ));
    assert_problem(
        &problems,
        "bindery.definition",
        &[
            "`enrch`",
            "did you mean `enrich`?",
            "registered: audit, enrich, tick",
        ],
    );
    assert_problem(
        &problems,
        "bindings.enrich-in-0.binder",
        &[
            "names binder `kafak`",
            "not declared",
            "did you mean `kafka`?",
            "declared: kafka, rabbit",
        ],
    );
    assert_problem(
        &problems,
        "bindings.enrich-in-0.consumer.max-attemps",
        &["unknown key `max-attemps`", "did you mean `max-attempts`?"],
    );
    assert_problem(
        &problems,
        "bindery.poller.fixed-dely",
        &["did you mean `fixed-delay`?"],
    );
    assert!(
        problems.iter().all(|p| p.origin == "configuration"),
        "each problem names its origin"
    );
}

/// One invalid configuration per case: (TOML, key path, fragments).
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "[bindigns.x]\n",
        "bindigns",
        &["unknown key `bindigns`", "did you mean `bindings`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0]\ndestinaton = \"x\"\n",
        "bindings.audit-in-0.destinaton",
        &["did you mean `destination`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0]\nmax-attemps = 3\n",
        "bindings.audit-in-0.max-attemps",
        &["did you mean `bindings.audit-in-0.consumer.max-attempts`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0]\nprefetch = 4\n",
        "bindings.audit-in-0.prefetch",
        &["did you mean `bindings.audit-in-0.consumer.prefetch`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0]\nrouting-key = \"a.b\"\n",
        "bindings.audit-in-0.routing-key",
        &["did you mean `bindings.audit-in-0.producer.routing-key`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nprefetch = \"many\"\n",
        "bindings.audit-in-0.consumer.prefetch",
        &["invalid type"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nmax-attempts = 0\n",
        "bindings.audit-in-0.consumer",
        &["max-attempts must be at least 1"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nback-off-multiplier = 0.5\n",
        "bindings.audit-in-0.consumer",
        &["back-off-multiplier must be a number of at least 1.0"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nback-off-initial-interval = \"20s\"\n",
        "bindings.audit-in-0.consumer",
        &["below back-off-initial-interval"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nback-off-initial-interval = \"soon\"\n",
        "bindings.audit-in-0.consumer.back-off-initial-interval",
        &["`soon` is not a duration"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nprefetch = 0\n",
        "bindings.audit-in-0.consumer.prefetch",
        &["prefetch must be at least 1"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nconcurrency = 0\n",
        "bindings.audit-in-0.consumer.concurrency",
        &["concurrency must be at least 1"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\nbinding-routing-keys = []\n",
        "bindings.audit-in-0.consumer.binding-routing-keys",
        &["nothing would be delivered"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.consumer]\ndead-letter = true\n",
        "bindings.audit-in-0.consumer.dead-letter",
        &["dead-letter on but no group", "set a group"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0]\ncontent-type = \"application/xml\"\n",
        "bindings.audit-in-0.content-type",
        &["unsupported content type `application/xml`"],
    ),
    (
        "[bindery]\ndefinition = \"tick\"\n[bindings.tick-out-0.producer]\nrouting-key = \"hb.{region}\"\n",
        "bindings.tick-out-0.producer.routing-key",
        &["unknown placeholder `{region}`", "{header.NAME}"],
    ),
    (
        "[bindery]\ndefinition = \"tick\"\n[bindings.tick-out-0.producer]\npartition-key = \"{payload.id\"\n",
        "bindings.tick-out-0.producer.partition-key",
        &["unclosed"],
    ),
    (
        "[bindery]\ndefinition = \"tick\"\n[bindings.tick-out-0.producer]\npartition-count = 0\n",
        "bindings.tick-out-0.producer.partition-count",
        &["at least 1"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-out-0]\ndestination = \"x\"\n",
        "bindings.audit-out-0",
        &["matches no function", "did you mean `audit-in-0`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\ndefault-binder = \"rabbit\"\n",
        "bindery.default-binder",
        &["names binder `rabbit`", "not declared", "declared: memory"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[binders.a]\ntype = \"memory\"\n[binders.b]\ntype = \"memory\"\n",
        "bindings.audit-in-0.binder",
        &["names no binder and there is no default", "one of: a, b"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[binders.rabbit]\ntype = \"rabitmq\"\n",
        "binders.rabbit.type",
        &["unknown type `rabitmq`", "did you mean `rabbitmq`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[binders.rabbit]\nuri = \"amqp://x\"\n",
        "binders.rabbit.type",
        &["has no `type`", "memory, rabbitmq, kafka"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[binders.local]\ntype = \"memory\"\nqueue-capasity = 5\n",
        "binders.local.queue-capasity",
        &["did you mean `queue-capacity`?"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[binders.local]\ntype = \"memory\"\nqueue-capacity = 0\n",
        "binders.local.queue-capacity",
        &["at least 1"],
    ),
    (
        "[bindery]\ndefinition = \"audit\"\n[bindings.audit-in-0.memory]\nanything = 1\n",
        "bindings.audit-in-0.memory.anything",
        &["unknown key `anything`"],
    ),
    (
        "[bindery]\ndefinition = \"audit|tick\"\n",
        "bindery.definition",
        &["`tick` is a source and can only come first"],
    ),
    (
        "[bindery]\ndefinition = \"audit|enrich\"\n",
        "bindery.definition",
        &["`audit` is a sink and can only come last"],
    ),
    (
        "[bindery]\ndefinition = \"enrich;;audit\"\n",
        "bindery.definition",
        &["has an empty part"],
    ),
    (
        "",
        "bindery.definition",
        &["3 functions are registered", "set bindery.definition"],
    ),
];

#[test]
fn every_validation_message_names_its_key_and_helps() {
    for (config, path, fragments) in CASES {
        let problems = problems(app().config_toml(config));
        assert_problem(&problems, path, fragments);
    }
}

#[test]
fn warnings_do_not_stop_the_app() {
    let wiring = wiring(app().config_toml(
        r#"
        [bindery]
        definition = "tick"
        [bindings.tick-out-0.consumer]
        max-attempts = 5
        [bindings.tick-out-0.producer]
        partition-count = 4
        "#,
    ));
    let warnings: Vec<String> = wiring.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("bindings.tick-out-0.consumer")
                && w.contains("no effect on an output binding")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("partition-count") && w.contains("has no partitions")),
        "{warnings:?}"
    );
}

#[test]
fn a_missing_configuration_file_is_a_problem() {
    let problems = problems(app().config_file("/nonexistent/bindery.toml"));
    assert!(problems[0].to_string().contains("does not exist"));
}

#[test]
fn duplicate_function_names_are_refused() {
    let result = App::builder()
        .without_registered_functions()
        .function("a", tick)
        .function("a", audit)
        .build();
    assert!(matches!(result, Err(Error::DuplicateFunction(name)) if name == "a"));
}

#[test]
fn the_wiring_prints_function_binding_binder_destination_and_group() {
    let wiring = wiring(app().config_toml(
        r#"
        [bindery]
        definition = "enrich"
        [bindings.enrich-in-0]
        destination = "orders"
        group = "billing"
        [bindings.enrich-out-0]
        destination = "enriched"
        "#,
    ));
    let text = wiring.to_string();
    assert!(text.contains("enrich (processor)"), "{text}");
    assert!(
        text.contains("in  enrich-in-0 -> binder memory (memory) destination=orders group=billing"),
        "{text}"
    );
    assert!(
        text.contains("out enrich-out-0 -> binder memory (memory) destination=enriched"),
        "{text}"
    );
}

#[test]
fn a14_a_back_off_longer_than_the_brokers_patience_warns() {
    let binding = |max_attempts: u32| {
        format!(
            r#"
            [bindery]
            definition = "audit"
            [binders.rabbit]
            type = "rabbitmq"
            consumer-timeout = "10m"
            [bindings.audit-in-0]
            destination = "orders"
            group = "audit"
            [bindings.audit-in-0.consumer]
            max-attempts = {max_attempts}
            back-off-initial-interval = "1m"
            back-off-multiplier = 2.0
            back-off-max-interval = "5m"
            "#
        )
    };
    let patient = |wiring: &Wiring| {
        wiring
            .warnings
            .iter()
            .map(ToString::to_string)
            .find(|w| w.contains("consumer_timeout"))
    };
    // 1 + 2 + 4 minutes of back-off fit in ten minutes; 1 + 2 + 4 + 5 do not.
    assert_eq!(patient(&wiring(app().config_toml(&binding(4)))), None);
    let warning = patient(&wiring(app().config_toml(&binding(5)))).expect("a warning");
    assert!(
        warning.contains("bindings.audit-in-0.consumer"),
        "{warning}"
    );
    assert!(warning.contains("12m"), "{warning}");
}

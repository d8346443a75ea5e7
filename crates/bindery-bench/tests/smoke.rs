//! The harness in smoke mode: every scenario runs end to end with tiny
//! counts, the broker scenarios against the real brokers (RabbitMQ, Kafka,
//! Redis, Mosquitto; a broker that does not answer fails the test, saying
//! how to start it). Timing is never asserted; only that each figure was
//! produced.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_reports_figures() {
    let options = bindery_bench::Options {
        rounds: 1,
        smoke: true,
        only: Vec::new(),
        executable: env!("CARGO_BIN_EXE_bindery-bench").into(),
        messages: None,
        side: None,
    };
    let report = bindery_bench::run(&options).await;
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "memory-bytes",
        "memory-json",
        "latency-memory p50",
        "latency-memory p99",
        "rss-memory",
        "rabbitmq-throughput",
        "latency-rabbitmq p50",
        "latency-rabbitmq p99",
        "rss-rabbitmq",
        "kafka-throughput",
        "latency-kafka p50",
        "latency-kafka p99",
        "redis-throughput",
        "mqtt-throughput",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "{expected} missing from {names:?}"
        );
    }
    for scenario in &report.scenarios {
        assert_eq!(scenario.bindery.len(), 1, "{}", scenario.name);
        assert_eq!(scenario.raw.len(), 1, "{}", scenario.name);
        assert!(
            scenario
                .raw
                .iter()
                .chain(&scenario.bindery)
                .all(|v| v.is_finite() && *v > 0.0),
            "{}: raw {:?}, bindery {:?}",
            scenario.name,
            scenario.raw,
            scenario.bindery
        );
    }
    let json = report.to_json();
    assert_eq!(
        json["scenarios"].as_array().map(Vec::len),
        Some(report.scenarios.len())
    );
    assert!(report.to_string().contains("ratio"));
}
